"""Training configuration: pydantic v2 models, YAML files and dotted overrides.

An invalid config fails before any work is done, with the field and the reason:

>>> from lttoolkit.engine.config import load_config
>>> cfg = load_config(None, ["train.epochs=3", "data.batch_size=32"])
>>> cfg.train.epochs, cfg.data.batch_size, cfg.model["type"]
(3, 32, 'bbn')
>>> load_config(None, ["train.epochs=-1"])
Traceback (most recent call last):
...
lttoolkit.errors.ConfigError: invalid config: train.epochs: Input should be greater than 0 (got -1)
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from lttoolkit.errors import ConfigError, UnknownComponentError
from lttoolkit.registry import DATASETS, parse_spec

__all__ = [
    "DataConfig",
    "OptimConfig",
    "TrainConfig",
    "RunConfig",
    "load_config",
    "apply_overrides",
    "config_to_yaml",
]

#: The most epochs a run may have (``train.epochs``); more is surely a typo.
MAX_EPOCHS = 1_000_000


class _Strict(BaseModel):
    # inf/nan are never meaningful settings (lr=inf would only surface as a NaN loss later)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads true as 1: `train.epochs=true` must not start a 1-epoch run.
        if isinstance(value, bool) and info.field_name is not None:
            allowed = _annotation_types(cls.model_fields[info.field_name].annotation)
            if bool not in allowed and allowed & {int, float}:
                raise ValueError(f"expected a number, got {str(value).lower()}")
        return value


def _annotation_types(annotation: Any) -> set[Any]:
    """The plain types an annotation admits (``int | None`` -> {int, NoneType})."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return {type(a) for a in args}
    if args and typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set().union(*(_annotation_types(a) for a in args))
    return {annotation}


class DataConfig(_Strict):
    """Where the data comes from and how it is made long-tailed and loaded."""

    dataset: str = Field(
        "embedded", description="a registered dataset (lttk list-components datasets): embedded, fashion_mnist, "
        "cifar10, cifar100, image_folder, json, text_list, or a plugin's"
    )
    root: str | None = Field(None, description="dataset folder (image root for json/text_list/image_folder)")
    train_annotations: str | None = Field(None, description="json/text_list: training annotation file")
    test_annotations: str | None = Field(None, description="json/text_list: test annotation file")
    allow_outside_root: bool = Field(False, description="let annotation paths point outside root")
    imbalance_ratio: float | None = Field(
        None, gt=0, description="make a balanced training set long-tailed (N_max / N_min); None keeps it as is"
    )
    profile: Literal["exp", "step"] = "exp"
    n_max: int | None = Field(None, gt=0, description="images of the head class (default: all it has)")
    permute_classes: bool = Field(False, description="choose the head class order with the seed")
    transforms: Literal["auto", "cifar", "mnist", "imagenet"] = "auto"
    image_size: int | None = Field(None, gt=0)
    in_chans: Literal[1, 3] | None = Field(None, description="1 or 3; None: the data's own (1 for Fashion-MNIST)")
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="held-out validation split (per class)")
    batch_size: int = Field(128, gt=0)
    test_batch_size: int = Field(256, gt=0)
    num_workers: int = Field(0, ge=0)

    @field_validator("imbalance_ratio")
    @classmethod
    def _ratio_at_least_one(cls, value: float | None) -> float | None:
        if value is not None:
            from lttoolkit.data.long_tail import check_imbalance_ratio

            try:
                check_imbalance_ratio(value)  # one message for the config and the library
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value
    bad_image_policy: Literal["error", "skip"] = Field(
        "error", description="error: stop at an unreadable image, naming it; skip: drop and count unreadable images"
    )
    check_files: bool | Literal["auto"] = Field(
        "auto", description="before training, check the image files: true opens and decodes every one; auto checks "
        "that every listed file exists, and decodes them too for sets of up to 5000 images; false checks nothing"
    )


class OptimConfig(_Strict):
    """SGD with momentum, linear warm-up rising every step, then multistep or cosine decay by epoch."""

    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(2e-4, ge=0)
    nesterov: bool = False
    warmup_epochs: int = Field(5, ge=0)
    schedule: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: list[int] = Field(default_factory=lambda: [120, 160])
    gamma: float = Field(0.01, gt=0, le=1, description="multistep: lr factor at each milestone")
    clip_grad_norm: float | None = Field(
        None, gt=0, description="clip the global gradient norm to this value before every optimizer step "
        "(torch.nn.utils.clip_grad_norm_); None does not clip"
    )


class TrainConfig(_Strict):
    """The loop: epochs, device, precision, evaluation and checkpoint cadence."""

    # Bounded: a run of a billion epochs is a typo, and every epoch's schedule value is checked up front.
    epochs: int = Field(200, gt=0, le=MAX_EPOCHS)
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, mps")
    amp: bool | Literal["auto"] = Field(
        "auto", description="mixed precision (torch.autocast) for training and evaluation; auto = on for CUDA, "
        "off elsewhere; true also on the CPU (bfloat16)"
    )
    amp_dtype: Literal["auto", "bfloat16", "float16"] = Field(
        "auto", description="the autocast dtype: auto = bfloat16 where the device supports it (CPU, recent "
        "GPUs), else float16; float16 trains with a GradScaler, bfloat16 needs none"
    )
    channels_last: bool | Literal["auto"] = Field(
        "auto", description="keep the model's weights and the images in channels_last memory format; auto = "
        "on for CUDA and the CPU (measured faster there: docs/benchmarks.md), off for MPS"
    )
    compile: bool = Field(False, description="torch.compile the model's forward (the first steps are slow)")
    compile_backend: str = Field("inductor", description="torch.compile backend (inductor; aot_eager to debug)")
    accumulate_steps: int = Field(
        1, gt=0, description="gradient accumulation: one optimizer step every N batches (effective batch "
        "N x data.batch_size; the lr schedule counts optimizer steps)"
    )
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="keep an exponential moving average of the weights (and buffers) with "
        "this decay, e.g. 0.999 (torch.optim.swa_utils.AveragedModel); evaluated, selected and checkpointed "
        "instead of the raw weights; None: off"
    )
    deterministic: bool = Field(
        False, description="deterministic algorithms (torch.use_deterministic_algorithms, cudnn.deterministic, "
        "CUBLAS_WORKSPACE_CONFIG); false turns cudnn.benchmark on for CUDA"
    )
    log_every: int = Field(
        50, gt=0, description="read the loss from the device every N steps (progress, non-finite check); "
        "fewer reads keep the GPU busy"
    )
    eval_every: int = Field(1, gt=0)
    checkpoint_every: int = Field(1, gt=0)
    max_steps_per_epoch: int | None = Field(None, gt=0, description="cap steps per epoch (smoke tests)")
    sync_batchnorm: bool = False
    loggers: list[str] = Field(
        default_factory=lambda: ["csv"],
        description="where each epoch's record goes besides metrics.jsonl: csv (always), tensorboard, or a "
                    "plugin's logger",
    )


class RunConfig(_Strict):
    """A whole training run. Every field can be set on the command line as ``a.b=value``."""

    seed: int = Field(0, ge=0, lt=2**63, description="seeds data selection, sampling, initialisation")
    output_dir: str = "runs"
    name: str | None = Field(
        None, description="run folder name under output_dir, one folder name (default: method-dataset-time-random)"
    )
    plugins: list[str] = Field(default_factory=list, description="modules imported first (lttoolkit.load_plugin)")
    plugins_required: list[str] = Field(
        default_factory=list,
        description="plugin distributions the run needs installed (e.g. lttk-extra-losses); checked first, "
                    "nothing is imported",
    )
    init_from: str | None = Field(
        None, description="start from this checkpoint's weights: the tensors whose names and shapes match are "
        "loaded, the rest keep their initialisation and are reported (CE -> BBN: the last block goes to both "
        "copies; another number of classes: the classifier is re-made); decoupling stage 2: model.type=crt/lws/tau_norm"
    )
    init_exclude: list[str] = Field(
        default_factory=list, description="with init_from: names of weights not to load (shell-style patterns "
        "of state-dict keys, e.g. 'classifier.*')"
    )
    model: dict[str, Any] = Field(
        default_factory=lambda: {"type": "bbn", "backbone": "resnet32_cifar"},
        description="a method and its options: {type: bbn, backbone: ..., sampler: ..., loss: ..., schedule: ...}",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("name")
    @classmethod
    def _name_is_one_folder(cls, value: str | None) -> str | None:
        # The run folder must stay inside output_dir: no separators, no "..", not absolute.
        if value is None:
            return value
        if not value.strip() or value in (".", "..") or "/" in value or "\\" in value or "\0" in value:
            raise ValueError(
                f"{value!r} is not a folder name: name is one folder under output_dir (no '/', '\\' or '..'); "
                f"set output_dir to choose where runs go"
            )
        return value

    @field_validator("model")
    @classmethod
    def _model_has_type(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            parse_spec(value, kind="method")
        except ConfigError as exc:
            raise ValueError(f"{exc} (e.g. bbn, ce; see `lttk list-components methods`)") from None
        return value

    @model_validator(mode="after")
    def _dataset_is_registered(self) -> RunConfig:
        # A dataset from a module in `plugins:` registers only once that module is loaded (when the
        # run starts); otherwise an unknown name stops here, before any work.
        if not self.plugins and self.data.dataset not in DATASETS:
            try:
                DATASETS.get(self.data.dataset)
            except UnknownComponentError as exc:
                raise ValueError(f"data.dataset: {exc}") from None
        return self

    @model_validator(mode="after")
    def _milestones_in_range(self) -> RunConfig:
        bad = [m for m in self.optim.milestones if m <= 0]
        if bad:
            raise ValueError(f"optim.milestones must be positive epochs, got {bad}")
        return self


# ----------------------------------------------------------------------------- loading
class UniqueKeySafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping holding the same key twice (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found the key {key!r} twice (first {seen[key]}); keep one", key_node.start_mark,
                )
            seen[key] = f"line {key_node.start_mark.line + 1}"
        return super().construct_mapping(node, deep=deep)


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif isinstance(child, str):
            # "model.loss=focal" then "model.loss.gamma=1": turn the name into a spec dict
            child = node[part] = {"type": child}
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key!r}: {part!r} holds {child!r}, not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (values parsed as YAML: ``3``, ``true``, ``[1, 2]``).

    >>> apply_overrides({"train": {"epochs": 200}}, ["train.epochs=10", "model.loss.type=focal"])
    {'train': {'epochs': 10}, 'model': {'loss': {'type': 'focal'}}}
    """
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.epochs=10)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: cannot parse the value: {exc}") from None
        _set_dotted(tree, key, value)
    return tree


def _section_fields(loc: Sequence[Any]) -> list[str]:
    """The field names of the config section that holds the field at ``loc``."""
    model: type[BaseModel] = RunConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _all_fields(model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """Every dotted field of the config (``train.epochs``, ...)."""
    model = model or RunConfig
    paths = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths.extend(_all_fields(annotation, f"{prefix}{name}."))
        else:
            paths.append(f"{prefix}{name}")
    return paths


def _format_validation(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        got = err.get("input")
        shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
        hint = ""
        if err["type"] == "extra_forbidden" and err["loc"]:
            fields = _section_fields(err["loc"])
            close = difflib.get_close_matches(str(err["loc"][-1]), fields, n=3, cutoff=0.6)
            prefix = ".".join(str(p) for p in err["loc"][:-1])
            spelled = [f"{prefix}.{name}" if prefix else name for name in close]
            if not spelled:  # a field put in the wrong section: `epochs=3` for train.epochs
                dotted = _all_fields()
                spelled = [path for path in dotted if path.rsplit(".", 1)[-1] == str(err["loc"][-1])]
            hint = f"; did you mean {' or '.join(spelled)}?" if spelled else f"; the fields here are {', '.join(fields)}"
        lines.append(f"{loc}: {err['msg']}{shown}{hint}")
    return "invalid config: " + "; ".join(lines)


#: In a config file: the file(s) it inherits from, relative to its folder (``_base_: bbn_cifar10_lt.yaml``).
BASE_KEY = "_base_"
#: In a mapping of a config file: ``_replace_: true`` replaces the inherited mapping instead of merging into it.
REPLACE_KEY = "_replace_"


def merge_config_trees(into: dict[str, Any], update: Mapping[str, Any], *, where: str = "") -> dict[str, Any]:
    """Merge ``update`` into ``into`` as a config inherits from its ``_base_``; return ``into``.

    Mappings merge key by key, except that a mapping replaces the inherited one when it holds
    ``_replace_: true`` (mmengine's ``_delete_``), or when it names a different ``type`` than the
    inherited one (the inherited options belong to another component). Anything else replaces.

    >>> merge_config_trees({"loss": {"type": "focal", "gamma": 2}}, {"loss": {"gamma": 1}})
    {'loss': {'type': 'focal', 'gamma': 1}}
    >>> merge_config_trees({"loss": {"type": "focal", "gamma": 2}}, {"loss": {"type": "ldam"}})
    {'loss': {'type': 'ldam'}}
    >>> merge_config_trees({"optim": {"lr": 0.1, "gamma": 0.1}}, {"optim": {"_replace_": True, "lr": 0.2}})
    {'optim': {'lr': 0.2}}
    """
    for key, value in update.items():
        here = f"{where}.{key}" if where else str(key)
        if not isinstance(value, Mapping):
            into[key] = value
            continue
        value = dict(value)
        replace = value.pop(REPLACE_KEY, False)
        if not isinstance(replace, bool):
            raise ConfigError(f"{here}.{REPLACE_KEY} must be true or false, got {replace!r}")
        existing = into.get(key)
        other_type = isinstance(existing, dict) and "type" in value and value["type"] != existing.get("type")
        if replace or other_type or not isinstance(existing, dict):
            into[key] = merge_config_trees({}, value, where=here)
        else:
            merge_config_trees(existing, value, where=here)
    return into


def _read_config_file(p: Path) -> dict[str, Any]:
    if p.is_dir():
        hint = f"; did you mean {str(p / 'config.yaml')!r}?" if (p / "config.yaml").is_file() else ""
        raise ConfigError(f"config file {str(p)!r} is a folder, not a YAML file{hint}")
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist; pass a YAML file (see examples/configs/)")
    try:
        # A safe loader (a config cannot run code) that also refuses a key given twice.
        loaded = yaml.load(p.read_text(encoding="utf-8"), Loader=UniqueKeySafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from None
    if loaded is None:
        # An empty file is a mistake (a wrong path, an unsaved editor), not a request for the defaults.
        raise ConfigError(
            f"config file {str(p)!r} is empty; write the settings into it, or run without a CONFIG for "
            f"the defaults"
        )
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level, got {type(loaded).__name__}")
    return loaded


def read_config_tree(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file as a tree, its ``_base_`` files (relative to its folder) merged under it.

    Raises:
        ConfigError: a file is missing or not YAML, ``_base_`` is not a file name (or a list of
            them), or a file inherits from itself.
    """
    p = Path(path)
    key = p.resolve()
    if key in _chain:
        loop = " -> ".join(str(c) for c in (*_chain, key))
        raise ConfigError(f"config {str(p)!r} inherits from itself ({loop}); remove one of these {BASE_KEY} entries")
    loaded = _read_config_file(p)
    bases = loaded.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) and b.strip() for b in bases):
        raise ConfigError(
            f"{BASE_KEY} in {str(p)!r} must be a file name or a list of them, relative to the file's folder "
            f"(e.g. {BASE_KEY}: bbn_cifar10_lt.yaml), got {bases!r}"
        )
    tree: dict[str, Any] = {}
    for base in bases:
        base_path = p.parent / base
        if not base_path.is_file():
            raise ConfigError(
                f"{BASE_KEY}: {base!r} in {str(p)!r} does not exist (looked for {str(base_path)!r}); "
                f"a base is found relative to the folder of the file that names it"
            )
        merge_config_trees(tree, read_config_tree(base_path, (*_chain, key)))
    return merge_config_trees(tree, loaded)


def _with_defaults(tree: Mapping[str, Any]) -> dict[str, Any]:
    # Sections (data, optim, train) merge into their defaults field by field; a free-form
    # mapping (model: a method and its options) given anywhere replaces the default one.
    full: dict[str, Any] = RunConfig().model_dump(mode="json")
    for key, value in tree.items():
        field = RunConfig.model_fields.get(str(key))
        annotation = field.annotation if field is not None else None
        section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if section and isinstance(value, Mapping) and isinstance(full.get(key), dict):
            merge_config_trees(full[key], value, where=str(key))
        else:
            full[key] = merge_config_trees({}, value, where=str(key)) if isinstance(value, Mapping) else value
    return full


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (), *, base: Mapping[str, Any] | None = None) -> RunConfig:
    """Load a YAML config (or the defaults), apply dotted overrides and validate.

    A config file may inherit from others with ``_base_: other.yaml`` (or a list), relative
    to its folder: the bases are merged first, then the file over them (mappings key by key;
    ``_replace_: true`` in a mapping replaces the inherited one). See :func:`merge_config_trees`.

    Args:
        path: a YAML file, or None for the defaults (BBN on the embedded data).
        overrides: ``key=value`` strings, applied in order.
        base: a dict to start from instead of a file.

    Raises:
        ConfigError: unreadable YAML, unknown field or invalid value; the message
            names the field and the reason.
    """
    tree: dict[str, Any] = merge_config_trees({}, dict(base or {}))
    if path is not None:
        merge_config_trees(tree, read_config_tree(path))
    # The defaults fill what the files leave out, so that `model.backbone=x` changes one key
    # of the default model instead of replacing the whole section.
    tree = apply_overrides(_with_defaults(tree), overrides)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc)) from None


def config_to_yaml(cfg: RunConfig) -> str:
    """The resolved config as YAML (what a run folder stores as ``config.yaml``)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
