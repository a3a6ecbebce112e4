"""The ``lttk`` command: ``--version``, ``--help``, ``list-components`` and ``--plugin``.

Run as ``python -m lttoolkit`` in a fresh interpreter, as a user would, except
for the table of timm backbones, which reuses this process's timm import.
The import-cost tests guard the promise that listing never imports torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lttoolkit
from lttoolkit.cli import main
from lttoolkit.registry import BUILTIN, DISABLE_ENV
from lttoolkit.registry._builtins import BUILTINS

KINDS = ["samplers", "losses", "schedules", "backbones", "methods", "datasets"]
COMMANDS = ["list-components", "train", "eval", "predict"]


def lttk(*args: str, pythonpath: Path | None = None, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != DISABLE_ENV}
    env["COLUMNS"] = "200"  # rich wraps narrower tables; names must stay whole
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "lttoolkit", *args], capture_output=True, text=True, env=env, timeout=120
    )


def rows_by_kind(stdout: str) -> dict[str, dict[str, dict]]:
    data = json.loads(stdout)
    return {kind: {row["name"]: row for row in rows} for kind, rows in data["registries"].items()}


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    """Two local plugin modules (not installed), for ``--plugin``."""
    for module, name in (("lttk_cli_plugin_a", "cli_half"), ("lttk_cli_plugin_b", "cli_quarter")):
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(f'''
            from lttoolkit.registry import SCHEDULES

            @SCHEDULES.register(name="{name}")
            class Schedule:
                """A schedule from {module}."""

                def __call__(self, epoch, max_epochs):
                    return 0.5
        '''))
    return tmp_path


# ---------------------------------------------------------------- basics


def test_version():
    done = lttk("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"lttoolkit {lttoolkit.__version__}"


def test_help_lists_every_command():
    done = lttk("--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: lttk")
    for command in COMMANDS:
        assert command in done.stdout
    assert "--plugin MODULE" in done.stdout


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: lttk" in capsys.readouterr().out


def test_unknown_kind_is_a_usage_error():
    done = lttk("list-components", "widgets")
    assert done.returncode == 2
    assert "invalid choice: 'widgets'" in done.stderr


# ---------------------------------------------------------------- list-components


def test_list_components_table_shows_every_builtin():
    done = lttk("list-components")
    assert done.returncode == 0, done.stderr
    for kind in KINDS:
        assert kind in done.stdout
    for rows in BUILTINS.values():
        for name, _, _ in rows:
            assert f" {name} " in done.stdout, name
    assert "<any timm model>" in done.stdout
    assert "BROKEN" not in done.stdout


def test_list_components_json_includes_every_builtin():
    done = lttk("list-components", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["timm"] is None  # no timm import for a plain listing
    rows = rows_by_kind(done.stdout)
    assert list(rows) == KINDS
    for kind, declared in BUILTINS.items():
        for name, _, summary in declared:
            row = rows[kind][name]
            assert row == {
                "kind": kind, "name": name, "source": BUILTIN, "status": "ok",
                "summary": summary, "error": None, "shadowed_by": None,
            }


def test_kind_and_filter_narrow_the_listing():
    done = lttk("list-components", "losses", "--filter", "*balanced*", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert list(data["registries"]) == ["losses"]
    assert [row["name"] for row in data["registries"]["losses"]] == ["balanced_softmax", "class_balanced"]
    assert data["timm"] is None


def test_backbones_filter_lists_timm_models_and_ours():
    done = lttk("list-components", "backbones", "--filter", "resnet1*", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [row["name"] for row in data["registries"]["backbones"]] == ["resnet110_cifar"]
    timm_names = data["timm"]["names"]
    assert {"resnet18", "resnet101", "resnet152"} <= set(timm_names)
    assert all(name.startswith("resnet1") for name in timm_names)
    assert "resnet110_cifar" not in timm_names  # ours are listed once, as ours
    assert data["timm"]["count"] == len(timm_names)


def test_backbones_filter_table(capsys):
    # In-process: this test session has paid for importing timm already.
    assert main(["list-components", "backbones", "--filter", "resnet1*"]) == 0
    out = capsys.readouterr().out
    assert "resnet110_cifar" in out and "resnet18" in out
    assert "timm models>" in out


# ---------------------------------------------------------------- --plugin


def test_plugin_option_loads_a_local_module(plugin_dir):
    done = lttk("--plugin", "lttk_cli_plugin_a", "list-components", "schedules", "--json", pythonpath=plugin_dir)
    assert done.returncode == 0, done.stderr
    row = rows_by_kind(done.stdout)["schedules"]["cli_half"]
    assert (row["source"], row["status"], row["summary"]) == (
        "module lttk_cli_plugin_a", "ok", "A schedule from lttk_cli_plugin_a.",
    )


def test_plugin_option_before_and_after_the_command_add_up(plugin_dir):
    done = lttk(
        "--plugin", "lttk_cli_plugin_a", "list-components", "--plugin", "lttk_cli_plugin_b", "schedules", "--json",
        pythonpath=plugin_dir,
    )
    assert done.returncode == 0, done.stderr
    schedules = rows_by_kind(done.stdout)["schedules"]
    assert schedules["cli_half"]["source"] == "module lttk_cli_plugin_a"
    assert schedules["cli_quarter"]["source"] == "module lttk_cli_plugin_b"


def test_missing_plugin_module_is_a_clean_error(tmp_path):
    done = lttk("--plugin", "lttk_no_such_cli_plugin", "list-components", pythonpath=tmp_path)
    assert done.returncode == 2
    assert "PluginLoadError" in done.stderr and "lttk_no_such_cli_plugin" in done.stderr
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- import cost


_IMPORT_PROBE = textwrap.dedent('''
    import contextlib, io, json, sys

    heavy = ("torch", "timm", "torchvision")
    report = {}

    def note(stage):
        report[stage] = sorted(m for m in heavy if m in sys.modules)

    import lttoolkit
    note("import lttoolkit")
    lttoolkit.SCHEDULES.list(); lttoolkit.SAMPLERS.entries(); "bbn" in lttoolkit.METHODS
    note("registry listing")
    from lttoolkit.cli import main
    with contextlib.redirect_stdout(io.StringIO()):
        with contextlib.suppress(SystemExit):
            main(["--help"])
        note("lttk --help")
        assert main(["list-components"]) == 0
        note("lttk list-components")
        assert main(["list-components", "--json"]) == 0
        note("lttk list-components --json")
        assert main(["list-components", "samplers"]) == 0
        note("lttk list-components samplers")
        assert main(["list-components", "datasets"]) == 0
        note("lttk list-components datasets")
    print(json.dumps(report))
''')


def test_listing_never_imports_torch_or_timm():
    env = {k: v for k, v in os.environ.items() if k != DISABLE_ENV}
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {
        "import lttoolkit": [],
        "registry listing": [],
        "lttk --help": [],
        "lttk list-components": [],
        "lttk list-components --json": [],
        "lttk list-components samplers": [],
        "lttk list-components datasets": [],
    }


def test_list_components_datasets_names_the_configs_datasets():
    done = lttk("list-components", "datasets", "--json")
    assert done.returncode == 0, done.stderr
    names = [row["name"] for row in json.loads(done.stdout)["registries"]["datasets"]]
    assert names == ["cifar10", "cifar100", "embedded", "fashion_mnist", "image_folder", "json", "text_list"]
