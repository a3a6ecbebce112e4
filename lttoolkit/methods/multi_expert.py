"""Multi-expert networks: a shared trunk, K experts that own the later layers, and a rule that
combines them.

BBN (Zhou et al., CVPR 2020) is the two-expert case: the last block duplicated, one batch per
branch, one classifier over the concatenated features. RIDE (Wang et al., "Long-tailed
Recognition by Routing Diverse Distribution-Aware Experts", ICLR 2021) splits after the first
stage: each of three experts owns the later stages and a cosine classifier, all experts see the
same batch, and the ensemble is the mean of their logits. SADE (Zhang et al., NeurIPS 2022)
trains three such experts with different logit adjustments. :class:`MultiExpertWrapper` builds
all of them from any timm-style backbone.

The pieces:

* **the split point** ``split_at``: the first module the experts own. By default they own it
  and every module with parameters or buffers registered after it on the way up to the root
  (:func:`later_modules`: for a CIFAR ResNet split at ``layer2``, ``layer2`` and ``layer3``);
  ``expert_modules=[...]`` names them explicitly (BBN: the last block only).
* **the experts**: each owned module's slot holds a container of K copies. By default copy 0
  is the backbone's own module and the others are deep copies (they start equal, as BBN's
  branches); ``experts_from=factory`` takes each expert's modules from a freshly built backbone
  instead (independent initialisation, or narrower experts: RIDE's reduced width).
* **the heads and the combination rule** ``head``: ``"linear"`` or ``"cosine"`` (one classifier
  per expert, the ensemble is the mean of the experts' logits, :class:`ExpertHeads`), or
  ``"concat"`` (one classifier over the concatenated features, BBN's, :class:`ConcatHead`), or
  any module with the same call.

How it runs:

* **one shared batch** (RIDE, and inference for every method): the backbone's own
  ``forward_features``. The trunk runs once; the first owned module (:class:`ExpertFork`) runs
  every expert's copy on the trunk's output and stacks the results along the batch, expert 0
  first; each later owned module (:class:`ExpertSplit`) runs copy k on the k-th slice. Each
  expert's batch norms see exactly its own B images, and the pooled ``[K·B, D]`` features are
  cut into the K experts' ``[B, D]``.
* **one batch per expert** (BBN's training): ``model(x_0, x_1, ...)`` runs K plain passes, pass k
  through an *expert view* of the backbone: a shallow copy of the modules on the paths to the
  owned slots, with expert k's modules in them (the branch views of
  :class:`~lttoolkit.methods.bilateral.BilateralWrapper`, for several slots). Views hold no tensor
  of their own and live outside the module tree, so ``state_dict``, ``.to()``, DDP, pickling and
  ``torch.compile`` (one graph) see each parameter once.

A method is a subclass that says how one training step uses the model (the method protocol of
:mod:`lttoolkit.methods.protocol`): the default :meth:`MultiExpertWrapper.training_step` takes
one shared batch and gives the loss the ensemble's and every expert's logits (RIDE's), and
:class:`BilateralExperts` is BBN's step. docs/multi_expert.md shows a third-party method in a
page of code.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from lttoolkit.errors import BackboneSplitError, ComponentContractError
from lttoolkit.methods.bilateral import BRANCHES, _BranchViews, bbn_loss, find_last_block
from lttoolkit.methods.protocol import EpochInfo, StepOutput
from lttoolkit.methods.single_branch import CosineClassifier

__all__ = [
    "MultiExpertWrapper",
    "BilateralExperts",
    "ExpertOutput",
    "ExpertFork",
    "ExpertSplit",
    "ExpertHeads",
    "ConcatHead",
    "later_modules",
    "stage_split",
]

HEADS = ("linear", "cosine", "concat")


class ExpertOutput(NamedTuple):
    """What a multi-expert head returns.

    Attributes:
        logits: the combined logits ``[B, C]`` (what ``model(x)`` returns).
        experts: each expert's own logits ``[B, K, C]``, or ``None`` for a head whose experts
            have no logits of their own (:class:`ConcatHead`).
    """

    logits: Tensor
    experts: Tensor | None


# --------------------------------------------------------------------------- the expert containers
class _ExpertContainer(nn.Module):
    """K copies of one module in its slot of the backbone, ``.experts[k]``."""

    def __init__(self, experts: Sequence[nn.Module]) -> None:
        super().__init__()
        self.experts = nn.ModuleList(experts)

    def __iter__(self) -> Iterator[nn.Module]:
        # One segment: timm's checkpoint_seq(stages, flatten=True) iterates every stage for its
        # blocks, and a container that replaced a whole stage must run as one piece.
        return iter((self,))


class ExpertFork(_ExpertContainer):
    """The first module the experts own: every copy runs on the same input (the trunk's output),
    and the outputs are stacked along the batch, expert 0 first (``[B, ...] -> [K·B, ...]``).

    >>> fork = ExpertFork([nn.Identity(), nn.Identity()])
    >>> fork(torch.ones(3, 4)).shape
    torch.Size([6, 4])
    """

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return torch.cat([expert(x, *args, **kwargs) for expert in self.experts], dim=0)


class ExpertSplit(_ExpertContainer):
    """A later module the experts own: copy k runs on the k-th of K equal slices of the batch
    (``[K·B, ...] -> [K·B, ...]``), so each copy sees its own expert's B rows only.

    >>> split = ExpertSplit([nn.Identity(), nn.Linear(2, 2, bias=False)])
    >>> _ = nn.init.zeros_(split.experts[1].weight)
    >>> split(torch.ones(4, 2)).tolist()
    [[1.0, 1.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
    """

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        size = x.shape[0] // len(self.experts)
        # Slices, not chunk(): torch.export keeps the batch size dynamic through them.
        return torch.cat([expert(x[k * size:(k + 1) * size], *args, **kwargs)
                          for k, expert in enumerate(self.experts)], dim=0)


# --------------------------------------------------------------------------- heads: the combination rule
class ExpertHeads(nn.Module):
    """One classifier per expert; the combined logits are the mean of the experts' logits.

    Args:
        num_experts: K.
        in_features: pooled features of one expert.
        num_classes: classes.
        kind: ``"linear"`` (``nn.Linear``) or ``"cosine"`` (a
            :class:`~lttoolkit.methods.single_branch.CosineClassifier`: cosine similarities).
        scale: every expert's logits are multiplied by it (RIDE: ``s = 30`` on cosine logits);
            default 1 for linear heads and 30 for cosine heads.

    ``forward(features, weights=None)``: with ``weights`` (one number per expert) the combined
    logits are ``sum_k w_k · z_k`` instead of the mean.

    >>> heads = ExpertHeads(2, 4, 3, kind="cosine", scale=30.0)
    >>> out = heads([torch.randn(5, 4), torch.randn(5, 4)])
    >>> tuple(out.logits.shape), tuple(out.experts.shape)
    ((5, 3), (5, 2, 3))
    >>> bool(out.experts.abs().max() <= 30.0 + 1e-4)
    True
    """

    def __init__(self, num_experts: int, in_features: int, num_classes: int, *, kind: str = "linear",
                 scale: float | None = None) -> None:
        super().__init__()
        if kind not in ("linear", "cosine"):
            raise ValueError(f"kind must be 'linear' or 'cosine', got {kind!r}")
        make = (lambda: nn.Linear(in_features, num_classes)) if kind == "linear" else (
            lambda: CosineClassifier(in_features, num_classes))
        self.heads = nn.ModuleList(make() for _ in range(num_experts))
        self.kind = kind
        self.scale = float(scale if scale is not None else (1.0 if kind == "linear" else 30.0))

    def forward(self, features: Sequence[Tensor], weights: Sequence[float | Tensor] | None = None) -> ExpertOutput:
        experts = torch.stack([head(f) for head, f in zip(self.heads, features)], dim=1)
        if self.scale != 1.0:
            experts = experts * self.scale
        if weights is None:
            logits = experts.mean(dim=1)
        else:
            logits = sum(w * experts[:, k] for k, w in enumerate(weights))  # type: ignore[assignment]
        return ExpertOutput(logits, experts)

    def expert_parameters(self, k: int) -> list[nn.Parameter]:
        """The parameters of expert ``k``'s classifier."""
        return list(self.heads[k].parameters())

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, scale={self.scale:g}"


class ConcatHead(nn.Module):
    """One linear classifier over the experts' concatenated features (BBN's).

    ``forward(features, weights=None)``: logits ``= W·[w_1 f_1 ; ... ; w_K f_K] + b``
    (BBN trains with ``w = (2α, 2(1−α))`` and infers with ``w = 1``, i.e. ``weights=None``).
    Its experts have no logits of their own: ``ExpertOutput.experts`` is ``None``.

    >>> head = ConcatHead(2, 3, 4)
    >>> head.classifier.in_features
    6
    >>> head([torch.ones(1, 3), torch.ones(1, 3)]).experts is None
    True
    """

    def __init__(self, num_experts: int, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(num_experts * in_features, num_classes)

    def forward(self, features: Sequence[Tensor], weights: Sequence[float | Tensor] | None = None) -> ExpertOutput:
        parts = list(features) if weights is None else [w * f for w, f in zip(weights, features)]
        return ExpertOutput(self.classifier(torch.cat(parts, dim=1)), None)

    def expert_parameters(self, k: int) -> list[nn.Parameter]:
        """The classifier is shared by all experts: none is any one expert's own."""
        return []


def _make_head(head: str | nn.Module, num_experts: int, in_features: int, num_classes: int,
               scale: float | None) -> nn.Module:
    if isinstance(head, nn.Module):
        return head
    if head == "concat":
        if scale is not None:
            raise ValueError("scale applies to per-expert heads ('linear', 'cosine'), not to head='concat'")
        return ConcatHead(num_experts, in_features, num_classes)
    if head in ("linear", "cosine"):
        return ExpertHeads(num_experts, in_features, num_classes, kind=head, scale=scale)
    raise ValueError(f"head must be one of {', '.join(map(repr, HEADS))} or an nn.Module, got {head!r}")


# --------------------------------------------------------------------------- the split
def _has_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def later_modules(model: nn.Module, split_at: str) -> list[str]:
    """``split_at`` and every module with parameters or buffers registered after it, on each level
    from ``split_at``'s parent up to the root: the modules the experts own by default.

    Registration order is taken as execution order (true of timm's models and the CIFAR
    ResNets); parameter-free modules (pooling, an emptied classifier) stay shared, as they
    compute the same on every expert's rows.

    >>> from lttoolkit.backbones import create_backbone
    >>> net = create_backbone("resnet20_cifar", num_classes=0)
    >>> later_modules(net, "layer2"), later_modules(net, "layer3.1")
    (['layer2', 'layer3'], ['layer3.1', 'layer3.2'])
    """
    try:
        model.get_submodule(split_at)
    except AttributeError:
        raise BackboneSplitError(f"{type(model).__name__} has no module {split_at!r} to split at") from None
    names = split_at.split(".")
    paths = [split_at]
    for depth in range(len(names), 0, -1):
        parent_path = ".".join(names[: depth - 1])
        parent = model.get_submodule(parent_path) if parent_path else model
        keys = list(parent._modules)
        for key in keys[keys.index(names[depth - 1]) + 1:]:
            child = parent._modules[key]
            if child is not None and _has_state(child):
                paths.append(f"{parent_path}.{key}" if parent_path else key)
    return paths


def _stages(model: nn.Module) -> list[str]:
    info = getattr(model, "feature_info", None)
    if info is not None and not isinstance(info, (list, tuple)) and hasattr(info, "get_dicts"):
        info = info.get_dicts()
    if not isinstance(info, (list, tuple)) or not info:
        raise BackboneSplitError(
            f"{type(model).__name__} has no timm-style feature_info to find its stages in; pass split_at=..."
        )
    stages = []
    for entry in info:
        path = entry.get("module") if isinstance(entry, dict) else None
        try:
            module = model.get_submodule(path) if path else None
        except AttributeError:
            module = None
        if module is not None and _has_state(module):
            stages.append(path)
    return stages


def stage_split(model: nn.Module) -> str:
    """The first stage of the second half of the backbone's stages (from ``feature_info``):
    RIDE's split point. CIFAR ResNets (3 stages): ``layer2``, the experts owning stages 2-3;
    ImageNet ResNets (4 stages): ``layer3``, the experts owning stages 3-4 (the authors' RIDE
    ResNets share ``layer1``-``layer2`` there).

    >>> import timm
    >>> from lttoolkit.backbones import create_backbone
    >>> stage_split(create_backbone("resnet32_cifar")), stage_split(timm.create_model("resnet18"))
    ('layer2', 'layer3')
    """
    stages = _stages(model)
    if len(stages) < 2:
        raise BackboneSplitError(
            f"{type(model).__name__} has {len(stages)} stage(s) in its feature_info: too few to split after "
            f"the first half; pass split_at=..."
        )
    return stages[len(stages) // 2]


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


def _expert_view(root: nn.Module, replacements: dict[str, nn.Module]) -> nn.Module:
    """``root`` with the module at each path of ``replacements`` replaced, without touching ``root``.

    Only the modules on the paths are copied, shallowly: each copy shares its original's
    parameters, buffers and hooks (the same dict objects) and every child off the paths, and gets
    a ``_modules`` dict of its own.
    """
    here: dict[str, nn.Module] = {}
    below: dict[str, dict[str, nn.Module]] = {}
    for path, module in replacements.items():
        head, _, rest = path.partition(".")
        if rest:
            below.setdefault(head, {})[rest] = module
        else:
            here[head] = module
    view = object.__new__(type(root))
    view.__dict__.update(root.__dict__)
    modules = dict(root._modules)
    modules.update(here)
    for name, subs in below.items():
        modules[name] = _expert_view(root._modules[name], subs)  # type: ignore[arg-type]
    view.__dict__["_modules"] = modules
    return view


def _check_timm_interface(backbone: nn.Module, who: str) -> None:
    for attr in ("forward_features", "forward_head", "reset_classifier"):
        if not callable(getattr(backbone, attr, None)):
            raise ComponentContractError(
                f"{who} needs a backbone with timm's interface; {type(backbone).__name__} has no {attr}(). "
                f"Wrap it or use a timm model."
            )


# --------------------------------------------------------------------------- the wrapper
class MultiExpertWrapper(_BranchViews, nn.Module):
    """A shared trunk and K experts owning the later layers of a timm-style backbone.

    Args:
        backbone: a model with timm's interface (``forward_features``, ``forward_head(x,
            pre_logits=True)``, ``num_features``, ``reset_classifier``, ``feature_info``). Its own
            classifier is removed.
        num_classes: classes.
        num_experts: K (>= 1).
        split_at: dotted path of the first module the experts own; the last block
            (:func:`~lttoolkit.methods.bilateral.find_last_block`) when omitted.
        expert_modules: the modules the experts own, in execution order (the first is the split
            point); by default :func:`later_modules` of ``split_at``.
        experts_from: ``factory() -> backbone``, called once per expert: expert k's modules are
            taken from the k-th backbone it builds (same module paths; widths may differ from the
            trunk's after the split). By default expert 0 keeps the backbone's own modules and the
            others are deep copies of them.
        head: ``"linear"``, ``"cosine"``, ``"concat"`` or a module called as
            ``head(features, weights) -> ExpertOutput`` (see :class:`ExpertHeads`, :class:`ConcatHead`).
        scale: logit scale of ``"linear"``/``"cosine"`` heads (default 1, and 30 for cosine).
        stream_names: one name per expert when the method feeds every expert its own batch (one
            sampler each, BBN); ``None``: one shared batch (``("main",)``, RIDE).

    The state dict names expert k's copy of an owned module ``backbone.<path>.experts.<k>.*``;
    every parameter appears once.

    Example:
        >>> import torch
        >>> from lttoolkit.backbones import create_backbone
        >>> model = MultiExpertWrapper(create_backbone("resnet20_cifar", num_classes=0), num_classes=10,
        ...                            num_experts=3, split_at="layer2", head="cosine")
        >>> model.expert_modules
        ('layer2', 'layer3')
        >>> out = model.train()(torch.randn(4, 3, 32, 32), return_experts=True)
        >>> tuple(out.logits.shape), tuple(out.experts.shape)
        ((4, 10), (4, 3, 10))
        >>> model.eval()(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        num_experts: int = 3,
        split_at: str | None = None,
        expert_modules: Sequence[str] | None = None,
        experts_from: Callable[[], nn.Module] | None = None,
        head: str | nn.Module = "linear",
        scale: float | None = None,
        stream_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        who = type(self).__name__
        _check_timm_interface(backbone, who)
        if isinstance(num_experts, bool) or not isinstance(num_experts, int) or num_experts < 1:
            raise ValueError(f"num_experts must be a whole number >= 1, got {num_experts!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if stream_names is not None and len(stream_names) != num_experts:
            raise ValueError(f"stream_names must name one stream per expert ({num_experts}), got {list(stream_names)}")
        backbone.reset_classifier(0)
        if expert_modules is not None:
            paths = [str(p) for p in expert_modules]
            if not paths:
                raise ValueError("expert_modules must name at least one module")
            if split_at is not None and split_at != paths[0]:
                raise ValueError(f"split_at={split_at!r} is not the first of expert_modules={paths}")
        else:
            paths = later_modules(backbone, split_at or find_last_block(backbone))
        self._check_paths(backbone, paths)
        sources = [None] * num_experts if experts_from is None else [experts_from() for _ in range(num_experts)]
        for source in sources:
            if source is not None:
                _check_timm_interface(source, f"{who}'s experts_from")
                source.reset_classifier(0)
        for index, path in enumerate(paths):
            own = backbone.get_submodule(path)
            copies = []
            for k, source in enumerate(sources):
                if source is None:
                    copies.append(own if k == 0 else copy.deepcopy(own))
                    continue
                try:
                    copies.append(source.get_submodule(path))
                except AttributeError:
                    raise BackboneSplitError(
                        f"experts_from built a {type(source).__name__} without the module {path!r}"
                    ) from None
            _set_submodule(backbone, path, (ExpertFork if index == 0 else ExpertSplit)(copies))
        self.backbone = backbone
        self.split_at = paths[0]
        self.expert_modules = tuple(paths)
        self.num_experts = num_experts
        self.num_classes = num_classes
        widths = sources[0] if sources[0] is not None else backbone
        self.feature_dim = int(getattr(widths, "head_hidden_size", None) or widths.num_features)
        self.head = _make_head(head, num_experts, self.feature_dim, num_classes, scale)
        self.stream_names = tuple(stream_names) if stream_names is not None else ("main",)
        self._refresh_views()

    @staticmethod
    def _check_paths(backbone: nn.Module, paths: list[str]) -> None:
        for path in paths:
            try:
                backbone.get_submodule(path)
            except AttributeError:
                raise BackboneSplitError(
                    f"{type(backbone).__name__} has no module {path!r} for the experts to own; top-level "
                    f"children are: {', '.join(name for name, _ in backbone.named_children())}"
                ) from None
        for a in paths:
            for b in paths:
                if a != b and b.startswith(a + "."):
                    raise BackboneSplitError(f"expert module {b!r} lies inside {a!r}: name each owned module once")
        if len(set(paths)) != len(paths):
            raise BackboneSplitError(f"expert_modules names a module twice: {paths}")

    # ------------------------------------------------------------------ expert views
    def expert_container(self, path: str) -> ExpertFork | ExpertSplit:
        """The container of the K copies in the owned slot ``path``."""
        return self.backbone.get_submodule(path)  # type: ignore[return-value]

    def _refresh_views(self) -> tuple[nn.Module, ...]:
        # Out of the module tree (a plain tuple attribute): the views hold no tensor of their own.
        containers = [self.expert_container(path) for path in self.expert_modules]
        views = tuple(
            _expert_view(self.backbone, {path: c.experts[k] for path, c in zip(self.expert_modules, containers)})
            for k in range(self.num_experts)
        )
        self.__dict__[self._VIEWS] = views
        return views


    # ------------------------------------------------------------------ features
    @staticmethod
    def _pooled(net: nn.Module, x: Tensor) -> Tensor:
        return net.forward_head(net.forward_features(x), pre_logits=True).flatten(1)

    def forward_features(self, x: Tensor) -> tuple[Tensor, ...]:
        """Pooled features of every expert for the same images, ``K`` tensors ``[B, D]``: the trunk runs once."""
        features = self._pooled(self.backbone, x)
        batch = x.shape[0]
        if features.shape[0] != self.num_experts * batch:
            raise BackboneSplitError(
                f"the experts' modules {list(self.expert_modules)} of {type(self.backbone).__name__} did not run "
                f"exactly once each on the whole batch ({features.shape[0]} pooled rows for {self.num_experts} "
                f"experts x {batch} images); split at a module that forward_features runs once, on the batch"
            )
        return tuple(features[k * batch:(k + 1) * batch] for k in range(self.num_experts))

    def expert_features(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """One batch per expert: ``inputs[k]`` through the trunk and expert k, a full pass each
        (per-expert batch statistics in the trunk too, as BBN's two passes)."""
        return tuple(self._pooled(view, x) for view, x in zip(self._views(), inputs))

    def forward(self, x: Tensor, *more: Tensor, weights: Sequence[float | Tensor] | None = None,
                return_experts: bool = False) -> Tensor | ExpertOutput:
        """Logits.

        ``model(x)``: every expert on the same images, the trunk once. ``model(x_0, ..., x_{K-1})``:
        one batch per expert. ``weights`` go to the head (BBN: ``(2α, 2(1−α))``);
        ``return_experts=True`` returns the :class:`ExpertOutput` (combined and per-expert logits).
        """
        if more:
            inputs = (x, *more)
            if len(inputs) != self.num_experts:
                raise ValueError(f"model(...) takes one batch for all experts or one per expert ({self.num_experts}), "
                                 f"got {len(inputs)}")
            if any(t.shape[0] != x.shape[0] for t in more):
                raise ValueError(
                    f"the experts' batches must have the same size, got {[t.shape[0] for t in inputs]}; use the same "
                    f"batch size and drop_last for every loader."
                )
            features = self.expert_features(*inputs)
        else:
            features = self.forward_features(x)
        out = self.head(features, weights)
        return out if return_experts else out.logits

    # ------------------------------------------------------------------ the method protocol
    def on_train_start(self, class_counts: Sequence[int]) -> None:
        """Nothing by default: the class counts reach the loss through the trainer."""

    def epoch_stats(self, epoch: EpochInfo) -> dict[str, float]:
        """Nothing changes with the epoch by default."""
        return {}

    def training_step(
        self,
        images: Sequence[Tensor],
        targets: Sequence[Tensor],
        criterion: Callable[..., Tensor],
        epoch: EpochInfo,
        forward: Callable[..., Any],
    ) -> StepOutput:
        """One shared batch through every expert (the trunk once), then the loss.

        A criterion that declares ``accepts_expert_logits = True`` (RIDE's loss) is called as
        ``criterion(logits, y, expert_logits=[B, K, C])``; any other loss scores each expert's
        logits and the step sums them (heads without per-expert logits: the combined logits).
        """
        if len(images) != 1:
            raise ValueError(f"{type(self).__name__}.training_step takes one shared batch, got {len(images)} streams; "
                             f"a method feeding each expert its own batch overrides training_step (BilateralExperts)")
        x, y = images[0], targets[0]
        out = forward(x, return_experts=True)
        if out.experts is None:
            loss = criterion(out.logits, y)
        elif getattr(criterion, "accepts_expert_logits", False):
            loss = criterion(out.logits, y, expert_logits=out.experts)
        else:
            loss = sum(criterion(out.experts[:, k], y) for k in range(out.experts.shape[1]))
        hits = (out.logits.detach().argmax(1) == y).sum()
        return StepOutput(loss=loss, logits=out.logits, hits=hits, batch_size=y.shape[0])  # type: ignore[arg-type]

    # ------------------------------------------------------------------ parameters
    def expert_parameters(self, k: int) -> list[nn.Parameter]:
        """Expert ``k``'s own parameters: its copy of every owned module, and its classifier."""
        params = [p for path in self.expert_modules for p in self.expert_container(path).experts[k].parameters()]
        own_head = getattr(self.head, "expert_parameters", None)
        return params + (list(own_head(k)) if callable(own_head) else [])

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role: ``trunk``, ``expert0`` ... ``expert{K-1}``, and ``head`` (what the
        experts' classifiers share: BBN's one classifier; empty for per-expert heads)."""
        experts = {f"expert{k}": self.expert_parameters(k) for k in range(self.num_experts)}
        owned = {id(p) for params in experts.values() for p in params}
        expert_modules = {id(p) for path in self.expert_modules for p in self.expert_container(path).parameters()}
        return {
            "trunk": [p for p in self.backbone.parameters() if id(p) not in expert_modules],
            **experts,
            "head": [p for p in self.head.parameters() if id(p) not in owned],
        }


# --------------------------------------------------------------------------- BBN, the two-expert case
class BilateralExperts(MultiExpertWrapper):
    """BBN (Zhou et al., CVPR 2020) through the generic wrapper: two experts owning the last
    block, one batch each (``conventional``, ``rebalancing``), one classifier over the
    concatenated features, BBN's step.

    The same network as :class:`~lttoolkit.methods.bilateral.BilateralWrapper` (which ``build("bbn")``
    returns, and which stays the reference: its checks, checkpoints and official-weights
    conversion): on the same weights (:meth:`load_bilateral_state_dict`) both give identical
    training logits, losses, gradients and inference logits (``tests/test_multi_expert.py``).

    >>> import torch
    >>> from lttoolkit.backbones import create_backbone
    >>> model = BilateralExperts(create_backbone("resnet20_cifar", num_classes=10), num_classes=10)
    >>> model.expert_modules, model.stream_names
    (('layer3.2',), ('conventional', 'rebalancing'))
    >>> model.train()(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32), weights=(1.4, 0.6)).shape
    torch.Size([4, 10])
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, split_at: str | None = None,
                 schedule: Callable[[int, int], float] | None = None) -> None:
        _check_timm_interface(backbone, type(self).__name__)
        block = split_at or find_last_block(backbone)
        super().__init__(backbone, num_classes, num_experts=2, expert_modules=[block], head="concat",
                         stream_names=BRANCHES)
        self.schedule = schedule

    def epoch_stats(self, epoch: EpochInfo) -> dict[str, float]:
        """``{"alpha": α}`` of the epoch, from the alpha schedule (checked to lie in [0, 1])."""
        from lttoolkit.schedules import checked_alpha

        if self.schedule is None:
            raise ValueError(f"this {type(self).__name__} has no alpha schedule; pass schedule=...")
        return {"alpha": checked_alpha(self.schedule, epoch.epoch, epoch.max_epochs,
                                       name=f"schedule {type(self.schedule).__name__}")}

    def training_step(self, images: Sequence[Tensor], targets: Sequence[Tensor], criterion: Callable[..., Tensor],
                      epoch: EpochInfo, forward: Callable[..., Any]) -> StepOutput:
        """BBN's step: ``forward(x_c, x_r, weights=(2α, 2(1−α)))``, then α·L(z, y_c) + (1−α)·L(z, y_r)."""
        alpha = self.epoch_stats(epoch)["alpha"]
        (x_c, x_r), (y_c, y_r) = images, targets
        logits = forward(x_c, x_r, weights=(2.0 * alpha, 2.0 * (1.0 - alpha)))
        predicted = logits.detach().argmax(1)
        hits = alpha * (predicted == y_c).sum() + (1.0 - alpha) * (predicted == y_r).sum()
        return StepOutput(loss=bbn_loss(criterion, logits, y_c, y_r, alpha), logits=logits, hits=hits,
                          batch_size=y_c.shape[0], stats={"alpha": alpha})

    def load_bilateral_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        """Load a :class:`~lttoolkit.methods.bilateral.BilateralWrapper`'s state dict (``bbn``
        checkpoints): ``<split>.conventional`` / ``.rebalancing`` become ``<split>.experts.0`` / ``.1``,
        ``classifier`` becomes ``head.classifier``."""
        block = f"backbone.{self.split_at}."
        renamed = {}
        for key, value in state_dict.items():
            if key.startswith("classifier."):
                key = "head." + key
            elif key.startswith(block):
                branch, _, rest = key[len(block):].partition(".")
                if branch in BRANCHES:
                    key = f"{block}experts.{BRANCHES.index(branch)}.{rest}"
            renamed[key] = value
        self.load_state_dict(renamed)
