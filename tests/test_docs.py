"""The documentation stays true to the code.

* every ``lttk`` command in a fenced ``bash`` block of README.md and docs/ parses with the
  real CLI parser, and every ``lttk train`` command's config (file + overrides) validates;
  nothing trains;
* the ``python`` blocks marked ``<!-- runnable -->`` run, page by page, in order, and print
  what their ``# -> TEXT`` comments say;
* the generated reference parts (docs/hooks.py) hold every config field, every command,
  every builtin schedule, and the alpha curves the schedules define;
* every page is in the site's navigation and every navigation entry exists.

The site itself is built with ``mkdocs build --strict`` (see mkdocs.yml); the test that does
that is marked slow and skips when MkDocs is not installed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
RUNNABLE = "<!-- runnable -->"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_{name}", DOCS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _load("hooks")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ----------------------------------------------------------------------------- bash blocks
def _bash_commands() -> list[tuple[str, list[str]]]:
    """``(where, argv after lttk)`` for every lttk invocation in a fenced bash block."""
    found = []
    for path in [ROOT / "README.md", *PAGES]:
        text = path.read_text(encoding="utf-8")
        for block in FENCE.finditer(text):
            if block.group("info").strip() not in ("bash", "sh", "shell", "console"):
                continue
            first_line = text[: block.start("body")].count("\n") + 1
            body = block.group("body").replace("\\\n", " ")
            for offset, line in enumerate(body.splitlines()):
                tokens = shlex.split(line, comments=True)
                # One segment per command of a `a && b; c | d` line.
                segment: list[str] = []
                for token in [*tokens, "&&"]:
                    if token in ("&&", "||", ";", "|"):
                        argv = _lttk_argv(segment)
                        if argv is not None:
                            found.append((f"{_rel(path)}:{first_line + offset}", argv))
                        segment = []
                    else:
                        segment.append(token)
    return found


def _lttk_argv(tokens: list[str]) -> list[str] | None:
    """The arguments lttk receives from a shell command, or None if it does not run lttk."""
    while tokens and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", tokens[0]):
        tokens = tokens[1:]  # VAR=value prefixes
    if tokens[:1] == ["lttk"]:
        return tokens[1:]
    if "lttoolkit" in tokens and tokens[tokens.index("lttoolkit") - 1] == "-m":
        return tokens[tokens.index("lttoolkit") + 1:]  # python -m lttoolkit / torchrun ... -m lttoolkit
    return None


COMMANDS = _bash_commands()


def test_docs_show_lttk_commands() -> None:
    where = {w.split(":")[0] for w, _ in COMMANDS}
    assert "README.md" in where and "docs/getting-started.md" in where
    assert len(COMMANDS) >= 30, "the command extractor found suspiciously few commands"


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_parses(where: str, argv: list[str]) -> None:
    from lttoolkit.cli import build_parser

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: `lttk {shlex.join(argv)}` does not parse (exit {exc.code}): {stderr.getvalue()}")
    assert args.command, f"{where}: `lttk {shlex.join(argv)}` names no command"
    if args.command == "train" and not args.resume:
        _check_train_config(where, args)


def _check_train_config(where: str, args: argparse.Namespace) -> None:
    from lttoolkit.cli.train import split_config_and_overrides
    from lttoolkit.engine.config import load_config
    from lttoolkit.engine.trainer import quickstart_config_path

    config, overrides = split_config_and_overrides(args.args)
    if args.init_from:
        overrides.append(f"init_from={args.init_from}")
    if config is None:
        config = str(quickstart_config_path())
    elif not (ROOT / config).is_file():
        assert not config.startswith("examples/"), f"{where}: {config} does not exist"
        return  # the reader's own file (e.g. runs/RUN/config.yaml)
    load_config(ROOT / config, overrides)  # raises ConfigError naming the field


def test_train_commands_are_checked_against_the_config_schema() -> None:
    from lttoolkit.errors import ConfigError

    args = argparse.Namespace(args=["train.epochs=-1"], init_from=None)
    with pytest.raises(ConfigError, match="train.epochs"):
        _check_train_config("probe", args)


# ----------------------------------------------------------------------------- python blocks
def _runnable_blocks(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    blocks = []
    for block in FENCE.finditer(text):
        before = text[: block.start()].rstrip().splitlines()
        if before and before[-1].strip() == RUNNABLE:
            assert block.group("info").strip() == "python", f"{_rel(path)}: {RUNNABLE} must precede a python block"
            blocks.append(block.group("body"))
    assert text.count(RUNNABLE) == len(blocks), f"{_rel(path)}: a {RUNNABLE} marker is not right before a fence"
    return blocks


RUNNABLE_PAGES = [p for p in PAGES if RUNNABLE in p.read_text(encoding="utf-8")]


def test_getting_started_has_runnable_examples() -> None:
    assert DOCS / "getting-started.md" in RUNNABLE_PAGES


EXPECTED_OUTPUT = re.compile(r"#\s*->\s*(.+?)\s*$", re.M)


@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=[_rel(p) for p in RUNNABLE_PAGES])
def test_runnable_python_blocks_run(page: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each block runs after the page's earlier ones; ``# -> TEXT`` comments are printed lines."""
    monkeypatch.chdir(ROOT)  # pages use paths such as examples/configs/...
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for number, code in enumerate(_runnable_blocks(page), start=1):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                exec(compile(code, f"{_rel(page)} block {number}", "exec"), namespace)
            except Exception as exc:  # report the page and block, not just the exception
                pytest.fail(f"{_rel(page)}, runnable block {number} failed: {type(exc).__name__}: {exc}")
        printed = [line.strip() for line in out.getvalue().splitlines()]
        for expected in EXPECTED_OUTPUT.findall(code):
            assert expected in printed, f"{_rel(page)}, block {number}: no printed line {expected!r} in {printed}"


def test_expected_output_comments_are_checked() -> None:
    pages = {p.name for p in RUNNABLE_PAGES if EXPECTED_OUTPUT.search(p.read_text(encoding="utf-8"))}
    assert {"getting-started.md", "concepts.md", "datasets.md", "configuration.md"} <= pages


# ----------------------------------------------------------------------------- generated parts
def _field_names(model: type, prefix: str = "") -> list[str]:
    from pydantic import BaseModel

    names = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            names.extend(_field_names(field.annotation, f"{prefix}{name}."))
        else:
            names.append(f"{prefix}{name}")
    return names


def test_config_reference_lists_every_runconfig_field() -> None:
    from lttoolkit.engine.config import RunConfig

    reference = hooks.config_reference()
    names = _field_names(RunConfig)
    assert {"seed", "model", "data.dataset", "data.val_fraction", "optim.lr", "train.epochs"} <= set(names)
    missing = [name for name in names if f"| `{name}` |" not in reference]
    assert not missing, f"the generated config reference lacks {missing}"
    # Defaults are shown as YAML: hand-checked against lttoolkit/engine/config.py.
    assert "| `optim.milestones` | list[integer] | `[120, 160]` |" in reference
    assert "| `data.imbalance_ratio` | number \\| null | `null` |" in reference


def test_every_config_field_has_a_description() -> None:
    from lttoolkit.engine.config import RunConfig

    undocumented = [row["name"] for row in hooks.config_fields(RunConfig) if not row["description"]]
    assert not undocumented, (
        f"config fields without a description: {undocumented}; give them Field(description=...) in "
        f"lttoolkit/engine/config.py"
    )


def test_fallback_descriptions_name_real_fields() -> None:
    from lttoolkit.engine.config import RunConfig

    stale = set(hooks.FALLBACK_DESCRIPTIONS) - set(_field_names(RunConfig))
    assert not stale, f"docs/hooks.py FALLBACK_DESCRIPTIONS names fields that no longer exist: {sorted(stale)}"


def test_cli_reference_holds_every_command_and_option() -> None:
    from lttoolkit.cli import build_parser

    helps = hooks.cli_commands()
    reference = hooks.cli_reference()
    parser = build_parser()
    expected = {f"lttk {name}" for name in hooks._subcommands(parser)} | {"lttk", "lttk plugin new"}
    assert expected <= set(helps), f"missing commands: {expected - set(helps)}"
    for command, text in helps.items():
        assert f"### `{command}`" in reference
        assert text.startswith(f"usage: {command}"), text[:200]
        assert "\x1b[" not in text, "help text must not carry terminal colours"
    for name, sub in hooks._subcommands(parser).items():
        for action in sub._actions:
            for option in action.option_strings:
                assert option in helps[f"lttk {name}"], f"{option} of lttk {name}"


def test_method_and_component_tables_cover_every_builtin() -> None:
    from lttoolkit.registry import ALL_REGISTRIES, BUILTINS

    components = hooks.components_table()
    methods = hooks.method_options()
    for kind, rows in BUILTINS.items():
        for name, _target, _summary in rows:
            assert f"| `{name}` |" in components, f"{kind}: {name}"
    for name in ALL_REGISTRIES["methods"].list():
        if not ALL_REGISTRIES["methods"].entry(name).is_plugin:
            assert f"| `{name}` |" in methods
    assert "`schedule` (parabolic)" in methods  # bbn's default, from its signature


def test_schedule_curves_cover_every_schedule_and_follow_their_formulas() -> None:
    from lttoolkit.registry import SCHEDULES

    curves = hooks.schedule_curves(200)
    builtin = [name for name in SCHEDULES.list() if not SCHEDULES.entry(name).is_plugin]
    assert list(curves) == builtin and len(builtin) >= 6
    for name, values in curves.items():
        assert len(values) == 200 and all(0.0 <= v <= 1.0 for v in values), name
    assert curves["parabolic"][100] == pytest.approx(0.75)  # 1 - (100/200)^2
    assert curves["linear"][50] == pytest.approx(0.75)  # 1 - 50/200
    assert curves["cosine"][100] == pytest.approx(2**-0.5)  # cos(pi/4)
    assert curves["parabolic_increment"][150] == pytest.approx(0.5625)  # (150/200)^2
    assert curves["step"][159] == 1.0 and curves["step"][160] == 0.0  # 80% of 200 epochs
    assert set(curves["constant"]) == {0.5}
    table = hooks.schedules_table(200)
    assert all(f"| `{name}` |" in table for name in builtin)
    assert "| `parabolic` | 1.000 | 0.938 | 0.750 | 0.438 | 0.010 |" in table


def test_div_epoch_quirk_curves_match_the_official_divisor() -> None:
    curves = hooks.quirk_curves((90, 180, 200))
    # Official lib/core/combiner.py: div_epoch = 100 * (E // 100 + 1) if E in [90, 180] else E,
    # alpha = 1 - ((epoch - 1) / div_epoch)^2 with 1-based epochs, i.e. 0-based T.
    assert curves["90 epochs, div_epoch_quirk"][-1] == pytest.approx(1 - (89 / 100) ** 2)
    assert curves["180 epochs, div_epoch_quirk"][-1] == pytest.approx(1 - (179 / 200) ** 2)
    assert curves["200 epochs, div_epoch_quirk"][-1] == pytest.approx(1 - (199 / 200) ** 2)
    assert curves["200 epochs, div_epoch_quirk"] == curves["200 epochs"]
    assert curves["90 epochs"][-1] == pytest.approx(1 - (89 / 90) ** 2)


def test_schedule_plots_name_every_schedule_and_are_reproducible() -> None:
    pytest.importorskip("matplotlib")
    svg = hooks.alpha_schedules_svg()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for name in hooks.schedule_curves():
        assert f">{name}<" in svg, f"{name} is not in the legend"
    assert hooks.alpha_schedules_svg() == svg, "the plot must not change between builds"
    quirk = hooks.div_epoch_quirk_svg()
    assert "200 epochs, div_epoch_quirk" in quirk


def test_markers_in_pages_are_known_and_every_generator_is_used() -> None:
    used = set()
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        used |= set(hooks.MARKER.findall(text))
    assert used <= set(hooks.GENERATORS), f"unknown markers: {used - set(hooks.GENERATORS)}"
    assert used == set(hooks.GENERATORS), f"generators no page uses: {set(hooks.GENERATORS) - used}"
    with pytest.raises(KeyError, match="lttk:nonsense"):
        hooks.expand_markers("<!-- lttk:nonsense -->", where="probe.md")


def test_doctests_become_code_blocks_for_the_api_reference() -> None:
    fence = _load("griffe_doctests").fence_doctests
    text = "Sum.\n\n>>> 1 + 1\n2\n\nArgs:\n    x: y.\n\nExample:\n    >>> [1][0]\n    1"
    assert fence(text).splitlines() == [
        "Sum.", "", "```pycon", ">>> 1 + 1", "2", "```", "", "Args:", "    x: y.", "",
        "Example:", "    ```pycon", "    >>> [1][0]", "    1", "    ```",
    ]
    # Griffe parses an Examples: section itself; fencing it would break that.
    examples = "Examples:\n    >>> 1\n    1"
    assert fence(examples) == examples


def test_links_out_of_the_docs_folder_point_to_the_repository(tmp_path: Path) -> None:
    (tmp_path / "docs" / "api").mkdir(parents=True)
    (tmp_path / "examples" / "configs").mkdir(parents=True)
    (tmp_path / "examples" / "configs" / "a.yaml").write_text("seed: 0\n")
    markdown = ("[cfg](../../examples/configs/a.yaml#L2) [dir](../../examples/configs) "
                "[missing](../../examples/b.yaml) [page](../faq.md) [web](https://example.org)")
    out = hooks.link_repository_files(markdown, "api/engine.md", docs_dir=str(tmp_path / "docs"),
                                      repo_url="https://github.com/o/r/")
    assert out == ("[cfg](https://github.com/o/r/blob/main/examples/configs/a.yaml#L2) "
                   "[dir](https://github.com/o/r/tree/main/examples/configs) "
                   "[missing](../../examples/b.yaml) [page](../faq.md) [web](https://example.org)")


# ----------------------------------------------------------------------------- navigation
def _nav_pages(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    return []


def test_every_page_is_in_the_navigation_and_every_entry_exists() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = _nav_pages(config["nav"])
    pages = {str(p.relative_to(DOCS)) for p in PAGES}
    assert pages - set(nav) == set(), "pages missing from mkdocs.yml nav"
    # benchmarks.md may not be written yet: docs/hooks.py then adds a placeholder.
    assert set(nav) - pages <= {"benchmarks.md"}, "nav entries without a page"
    assert config["hooks"] == ["docs/hooks.py"]


@pytest.mark.slow
def test_site_builds_in_strict_mode(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("matplotlib")
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or "mkdocs"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()
    assert (tmp_path / "site" / "assets" / "alpha_schedules.svg").is_file()
