"""MkDocs hooks: the parts of the documentation that are generated from the code.

Pages hold markers such as ``<!-- lttk:config-reference -->``; :func:`on_page_markdown`
replaces each with text made from the live objects, so the reference never goes stale:

* ``config-reference``: every field of :class:`lttoolkit.engine.config.RunConfig` and its
  sections (name, type, default, constraints, description), from the pydantic models;
* ``method-options``: the options of every builtin method, from the factories' signatures;
* ``cli-reference``: the help of every ``lttk`` command, from
  :func:`lttoolkit.cli.build_parser`;
* ``components``: the builtin components of every registry with their summaries;
* ``schedules-table``: every builtin alpha schedule with alpha at a few epochs.

:func:`on_files` adds two generated images (``assets/alpha_schedules.svg`` and
``assets/div_epoch_quirk.svg``, plotted with matplotlib from the schedule registry), and a
placeholder ``benchmarks.md`` while that page does not exist yet.

:func:`on_page_markdown` also turns links that leave ``docs/`` (``../benchmarks/README.md``)
into links to the repository, which MkDocs could not resolve.

The generators are plain functions without MkDocs imports, so ``tests/test_docs.py`` checks
them in the ordinary test run (matplotlib only for the plots).
"""

from __future__ import annotations

import argparse
import inspect
import io
import os
import re
import types
import typing
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import yaml
from pydantic import BaseModel

#: Descriptions for config fields whose pydantic ``Field`` has none. A field's own
#: ``description=`` always wins; ``tests/test_docs.py`` checks every key is still a field.
FALLBACK_DESCRIPTIONS: dict[str, str] = {
    "output_dir": "parent folder of the run folders",
    "data.dataset": "where the images come from (see the Datasets page)",
    "data.profile": "long-tail profile with imbalance_ratio: exp (exponential decay) or step (half the classes cut)",
    "data.transforms": "augmentation family; auto follows the dataset (cifar, mnist or imagenet)",
    "data.image_size": "input side in pixels; default 32 (cifar), 28 (mnist) or 224 (imagenet)",
    "data.batch_size": "training batch size per stream and process (BBN draws one batch per branch)",
    "data.test_batch_size": "evaluation batch size",
    "data.num_workers": "DataLoader worker processes (0: load in the main process)",
    "optim.lr": "base learning rate (per process; scale it yourself for larger total batches)",
    "optim.momentum": "SGD momentum",
    "optim.weight_decay": "L2 weight decay",
    "optim.nesterov": "Nesterov momentum",
    "optim.warmup_epochs": "epochs of linear learning-rate warm-up",
    "optim.schedule": "learning-rate decay after warm-up",
    "optim.milestones": "multistep: epochs at which the learning rate is multiplied by gamma",
    "train.epochs": "number of epochs (T_max of the alpha schedule)",
    "train.eval_every": "evaluate every this many epochs (the last epoch always)",
    "train.checkpoint_every": "write last.pt every this many epochs (the last epoch always)",
    "train.sync_batchnorm": "synchronise batch norm across GPUs under torchrun (CUDA only)",
}

MARKER = re.compile(r"<!--\s*lttk:([a-z-]+)\s*-->")

#: Epochs the schedule plots and table use: the CIFAR-LT recipe of BBN.
PLOT_EPOCHS = 200


# ----------------------------------------------------------------------------- config reference
def _type_name(annotation: Any) -> str:
    """A short, YAML-minded spelling of a type annotation."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(yaml.safe_dump(a, default_flow_style=True).splitlines()[0] for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if annotation is type(None):
        return "null"
    if origin in (list, tuple, set):
        return f"list[{', '.join(_type_name(a) for a in args)}]" if args else "list"
    if origin is dict:
        return "mapping"
    if annotation is typing.Any:
        return "any"
    if isinstance(annotation, type):
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation).replace("typing.", "")


def _yaml_value(value: Any) -> str:
    """``value`` as it is written in a YAML config (``null``, ``true``, ``[120, 160]``)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip()
    return text[:-4].strip() if text.endswith("\n...") else text.removesuffix("...").strip()


def _bound(value: Any) -> str:
    # Integer limits such as 2**63 read better as powers of two.
    if isinstance(value, int) and value >= 2**16 and value & (value - 1) == 0:
        return f"2^{value.bit_length() - 1}"
    return str(value)


def _constraints(field: Any) -> str:
    symbols = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}
    parts = []
    for item in field.metadata:
        for attr, symbol in symbols.items():
            bound = getattr(item, attr, None)
            if bound is not None:
                parts.append(f"{symbol} {_bound(bound)}")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_fields(model: type[BaseModel] | None = None, prefix: str = "") -> list[dict[str, str]]:
    """Every leaf field of ``model`` (default :class:`RunConfig`) with its dotted name.

    Returns:
        One dict per field: ``name``, ``section``, ``type``, ``default``, ``constraints``,
        ``description``; nested sections (``data``, ``optim``, ``train``) are flattened.
    """
    if model is None:
        from lttoolkit.engine.config import RunConfig

        model = RunConfig
    rows: list[dict[str, str]] = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(config_fields(annotation, f"{dotted}."))
            continue
        description = field.description or FALLBACK_DESCRIPTIONS.get(dotted, "")
        rows.append(
            {
                "name": dotted,
                "section": prefix.rstrip(".") or "(top level)",
                "type": _type_name(annotation),
                "default": _yaml_value(field.get_default(call_default_factory=True)),
                "constraints": _constraints(field),
                "description": description,
            }
        )
    return rows


def config_reference() -> str:
    """Markdown tables of every config field, one table per section."""
    from lttoolkit.engine.config import RunConfig

    sections: dict[str, list[dict[str, str]]] = {}
    for row in config_fields(RunConfig):
        sections.setdefault(row["section"], []).append(row)
    docs = {"(top level)": RunConfig.__doc__}
    for name, field in RunConfig.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            docs[name] = field.annotation.__doc__
    out = []
    for section, rows in sections.items():
        title = "Top level" if section == "(top level)" else f"`{section}`"
        out.append(f"### {title}\n")
        if docs.get(section):
            out.append(inspect.cleandoc(docs[section]) + "\n")
        out.append("| field | type | default | description |\n|---|---|---|---|")
        for row in rows:
            description = row["description"]
            if row["constraints"]:
                description = f"{description} ({row['constraints']})" if description else row["constraints"]
            out.append(
                f"| `{row['name']}` | {row['type']} | `{_cell(row['default'])}` | {_cell(description)} |"
            )
        out.append("")
    return "\n".join(out)


def method_options() -> str:
    """A table of every builtin method's options and defaults, from its factory's signature."""
    from lttoolkit.registry import METHODS

    out = ["| method | options (default) | what it is |", "|---|---|---|"]
    for entry in METHODS.entries():
        if entry.is_plugin:
            continue
        factory = METHODS.get(entry.name)
        params = []
        for param in inspect.signature(factory).parameters.values():
            if param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                continue
            default = "" if param.default is param.empty else f" ({_yaml_value(param.default)})"
            params.append(f"`{param.name}`{default}")
        out.append(f"| `{entry.name}` | {_cell(', '.join(params))} | {_cell(entry.summary)} |")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- CLI reference
@contextmanager
def _plain_terminal(columns: int = 100) -> Iterator[None]:
    """A fixed width and no colours, so generated help does not depend on the terminal."""
    saved = {key: os.environ.get(key) for key in ("COLUMNS", "NO_COLOR", "PYTHON_COLORS", "FORCE_COLOR")}
    os.environ.update(COLUMNS=str(columns), NO_COLOR="1", PYTHON_COLORS="0")
    os.environ.pop("FORCE_COLOR", None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_commands() -> dict[str, str]:
    """``"lttk train"`` -> its ``--help`` text, for the top level and every (sub)command."""
    from lttoolkit.cli import build_parser

    with _plain_terminal():
        parser = build_parser()
        helps = {"lttk": parser.format_help()}

        def walk(prefix: str, node: argparse.ArgumentParser) -> None:
            for name, sub in _subcommands(node).items():
                helps[f"{prefix} {name}"] = sub.format_help()
                walk(f"{prefix} {name}", sub)

        walk("lttk", parser)
    return helps


def cli_reference() -> str:
    """Markdown: one section per command with its help text."""
    out = []
    for command, text in cli_commands().items():
        out.append(f"### `{command}`\n\n```text\n{text.rstrip()}\n```\n")
    return "\n".join(out)


# ----------------------------------------------------------------------------- components
def components_table() -> str:
    """Every builtin component of every registry, with its one-line summary."""
    from lttoolkit.registry import ALL_REGISTRIES

    out = []
    for kind, registry in ALL_REGISTRIES.items():
        rows = [e for e in registry.entries() if not e.is_plugin]
        out.append(f"**{kind}** (`lttoolkit.{kind.upper()}`)\n\n| name | summary |\n|---|---|")
        out.extend(f"| `{e.name}` | {_cell(e.summary)} |" for e in rows)
        if kind == "backbones":
            out.append("| *any timm model* | every `timm.list_models()` name, e.g. `resnet50`, `convnext_tiny` |")
        out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------- alpha schedules
def schedule_curves(epochs: int = PLOT_EPOCHS) -> dict[str, list[float]]:
    """alpha at every epoch ``0 .. epochs-1`` for every builtin schedule (default options)."""
    from lttoolkit.registry import SCHEDULES
    from lttoolkit.schedules import checked_alpha

    curves = {}
    for entry in SCHEDULES.entries():
        if entry.is_plugin:
            continue
        schedule = SCHEDULES.build(entry.name)
        curves[entry.name] = [checked_alpha(schedule, t, epochs, name=entry.name) for t in range(epochs)]
    return curves


def quirk_curves(epoch_counts: tuple[int, ...] = (90, 180, 200)) -> dict[str, list[float]]:
    """``parabolic`` with and without ``div_epoch_quirk`` for the given numbers of epochs."""
    from lttoolkit.schedules import ParabolicDecay

    curves = {}
    for epochs in epoch_counts:
        for quirk in (False, True):
            schedule = ParabolicDecay(div_epoch_quirk=quirk)
            label = f"{epochs} epochs" + (", div_epoch_quirk" if quirk else "")
            curves[label] = [schedule(t, epochs) for t in range(epochs)]
    return curves


def schedules_table(epochs: int = PLOT_EPOCHS) -> str:
    """Markdown: each builtin schedule's summary and alpha at a few epochs."""
    from lttoolkit.registry import SCHEDULES

    curves = schedule_curves(epochs)
    points = [0, epochs // 4, epochs // 2, 3 * epochs // 4, epochs - 1]
    head = " | ".join(f"T={t}" for t in points)
    out = [f"| schedule | {head} | formula |", "|---|" + "---|" * len(points) + "---|"]
    for name, values in curves.items():
        cells = " | ".join(f"{values[t]:.3f}" for t in points)
        out.append(f"| `{name}` | {cells} | {_cell(SCHEDULES.entry(name).summary)} |")
    return "\n".join(out) + f"\n\nalpha at the 0-based epoch T of a {epochs}-epoch run, default options.\n"


def _svg(draw: Callable[[Any], None], *, size: tuple[float, float]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    # Text stays text (searchable, testable) and no date is embedded: the file is reproducible.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "lttoolkit"}):
        fig, ax = plt.subplots(figsize=size)
        try:
            draw(ax)
            fig.tight_layout()
            buffer = io.StringIO()
            fig.savefig(buffer, format="svg", metadata={"Date": None})
        finally:
            plt.close(fig)
    return buffer.getvalue()


def alpha_schedules_svg(epochs: int = PLOT_EPOCHS) -> str:
    """An SVG plot of every builtin alpha schedule over ``epochs`` epochs."""
    curves = schedule_curves(epochs)
    styles = ["-", "--", "-.", ":"]

    def draw(ax: Any) -> None:
        for i, (name, values) in enumerate(curves.items()):
            ax.plot(range(epochs), values, styles[i % len(styles)], linewidth=2, label=name)
        ax.set_xlabel(f"epoch T (0-based, T_max = {epochs})")
        ax.set_ylabel("alpha (weight of the conventional branch)")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlim(0, epochs - 1)
        ax.grid(alpha=0.3)
        ax.legend(title="SCHEDULES", loc="center left", bbox_to_anchor=(1.01, 0.5))

    return _svg(draw, size=(8.0, 4.2))


def div_epoch_quirk_svg() -> str:
    """An SVG plot of ``parabolic`` with and without the official code's ``div_epoch``."""
    curves = quirk_curves()

    def draw(ax: Any) -> None:
        colours = {}
        for label, values in curves.items():
            epochs = label.split()[0]
            quirk = "quirk" in label
            # Quirk curves on top: with 180 epochs the quirk's curve is the 200-epoch one, cut short.
            line = ax.plot(range(len(values)), values, "--" if quirk else "-", linewidth=2, label=label,
                           color=colours.get(epochs), zorder=3 if quirk else 2)
            colours.setdefault(epochs, line[0].get_color())
        ax.set_xlabel("epoch T (0-based)")
        ax.set_ylabel("alpha")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize="small")

    return _svg(draw, size=(7.0, 3.8))


GENERATED_IMAGES: dict[str, Callable[[], str]] = {
    "assets/alpha_schedules.svg": alpha_schedules_svg,
    "assets/div_epoch_quirk.svg": div_epoch_quirk_svg,
}

GENERATORS: dict[str, Callable[[], str]] = {
    "config-reference": config_reference,
    "method-options": method_options,
    "cli-reference": cli_reference,
    "components": components_table,
    "schedules-table": schedules_table,
}


def expand_markers(markdown: str, where: str = "page") -> str:
    """Replace every ``<!-- lttk:NAME -->`` in ``markdown`` by the generated text.

    Raises:
        KeyError: an unknown marker name (a typo in a page), naming the page.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise KeyError(f"{where}: unknown marker <!-- lttk:{name} -->; known: {', '.join(GENERATORS)}")
        return GENERATORS[name]()

    return MARKER.sub(replace, markdown)


_BENCHMARKS_PLACEHOLDER = """# Benchmarks

The benchmark report (`docs/benchmarks.md`) has not been written yet. The scripts live in
`benchmarks/` of the repository.
"""


# ----------------------------------------------------------------------------- MkDocs events
def on_files(files: Any, config: Any) -> Any:
    """Add the generated plots (and a benchmarks placeholder while the page is missing)."""
    from mkdocs.structure.files import File

    for path, make in GENERATED_IMAGES.items():
        files.append(File.generated(config, path, content=make()))
    if files.get_file_from_path("benchmarks.md") is None:
        files.append(File.generated(config, "benchmarks.md", content=_BENCHMARKS_PLACEHOLDER))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Expand the ``<!-- lttk:... -->`` markers and point links to repository files at the repository."""
    markdown = expand_markers(markdown, where=page.file.src_uri)
    return link_repository_files(markdown, page.file.src_uri, docs_dir=config["docs_dir"],
                                 repo_url=config.get("repo_url") or "")


REPO_LINK = re.compile(r"\]\((?P<target>\.\./[^)\s#]+)(?P<anchor>#[^)\s]*)?\)")


def link_repository_files(markdown: str, src_uri: str, *, docs_dir: str, repo_url: str, branch: str = "main") -> str:
    """Rewrite relative links that leave the docs folder (``../benchmarks/README.md``) into links
    to the file in the repository, so they work on GitHub and on the site alike. Targets that do
    not exist are left alone, so ``mkdocs build --strict`` still reports them.

    >>> import os, tempfile
    >>> root = tempfile.mkdtemp(); os.makedirs(f"{root}/docs"); os.makedirs(f"{root}/examples")
    >>> open(f"{root}/examples/a.py", "w").close()
    >>> link_repository_files("[a](../examples/a.py) [b](../nope.py)", "faq.md",
    ...                       docs_dir=f"{root}/docs", repo_url="https://github.com/o/r")
    '[a](https://github.com/o/r/blob/main/examples/a.py) [b](../nope.py)'
    """
    docs = os.path.realpath(docs_dir)
    root = os.path.dirname(docs)
    page_dir = os.path.dirname(os.path.join(docs, src_uri))

    def replace(match: re.Match[str]) -> str:
        target = os.path.realpath(os.path.join(page_dir, match.group("target")))
        inside_repo = target.startswith(root + os.sep)
        if not repo_url or not inside_repo or target.startswith(docs + os.sep) or not os.path.exists(target):
            return match.group(0)
        kind = "tree" if os.path.isdir(target) else "blob"
        relative = os.path.relpath(target, root).replace(os.sep, "/")
        return f"]({repo_url.rstrip('/')}/{kind}/{branch}/{relative}{match.group('anchor') or ''})"

    return REPO_LINK.sub(replace, markdown)
