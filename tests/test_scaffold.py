"""``lttoolkit.cli.scaffold.new_plugin``: names, files, and generated packages that install and pass their tests.

The generated packages are made discoverable two ways: cheaply, by putting
``src/`` on ``PYTHONPATH`` next to a hand-written ``<dist>-0.1.0.dist-info``
holding the entry points (what pip would write), and for real, with
``pip install --no-deps --no-build-isolation --no-index --target``.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lttoolkit.errors import ConfigError, LTToolkitError
from lttoolkit.cli.scaffold import PLUGIN_KINDS, TEMPLATES, PluginExistsError, new_plugin, package_name

KINDS = list(PLUGIN_KINDS)
REGISTRY_OF = {"sampler": "samplers", "loss": "losses", "schedule": "schedules", "backbone": "backbones",
               "method": "methods", "dataset": "datasets"}


def dist_name(kind: str) -> str:
    return f"lttk-scaffold-{kind}"


# ---------------------------------------------------------------- names and kinds


@pytest.mark.parametrize(("name", "package"), [
    ("my-lt-losses", "my_lt_losses"),
    ("My-LT.losses", "my_lt_losses"),
    ("a", "a"),
    ("lttk__extra--x", "lttk_extra_x"),
])
def test_package_name_is_snake_case(name, package):
    assert package_name(name) == package


@pytest.mark.parametrize(("name", "message"), [
    ("", "needs a name"),
    (42, "needs a name"),
    ("-losses", "not a valid distribution name"),
    ("losses-", "not a valid distribution name"),
    ("my losses", "not a valid distribution name"),
    ("losses\n", "not a valid distribution name"),
    ("lösses", "not a valid distribution name"),
    ("3d-losses", "not a valid identifier"),
    ("class", "not a valid identifier"),
    ("json", "would hide"),
    ("lttoolkit", "would hide"),
    ("Torch", "would hide"),
])
def test_bad_names_are_refused_with_the_reason(name, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        new_plugin(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unknown_kind_lists_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="sampler, loss, schedule, backbone, method, dataset"):
        new_plugin("my-plugin", tmp_path, kind="optimizer")


def test_plural_kind_is_accepted(tmp_path):
    root = new_plugin("my-losses", tmp_path, kind="losses")
    assert (root / "src" / "my_losses" / "loss.py").is_file()


@pytest.mark.parametrize(("kind", "component", "message"), [
    ("loss", "focal", "already a builtin loss"),
    ("method", "bbn", "already a builtin method"),
    ("loss", "my-loss", "Python-style name"),
    ("method", "single_branch", "clashes"),   # would shadow the helper the template imports
    ("loss", "long_tail", "clashes"),         # LongTailLoss is the template's base class
    ("backbone", "print", "clashes"),
])
def test_bad_component_names_are_refused(kind, component, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        new_plugin("my-plugin", tmp_path, kind=kind, component=component)
    assert list(tmp_path.iterdir()) == []


def test_never_overwrites(tmp_path):
    existing = tmp_path / "my-plugin"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(PluginExistsError, match="already exists") as info:
        new_plugin("my-plugin", tmp_path)
    assert isinstance(info.value, FileExistsError) and isinstance(info.value, LTToolkitError)
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
    assert (existing / "keep.txt").read_text(encoding="utf-8") == "mine"


def test_creates_missing_parent_folders(tmp_path):
    root = new_plugin("my-plugin", tmp_path / "a" / "b", kind="schedule")
    assert root == tmp_path / "a" / "b" / "my-plugin" and root.is_dir()


# ---------------------------------------------------------------- what is written


@pytest.mark.parametrize("kind", KINDS)
def test_layout_and_entry_point(kind, tmp_path):
    root = new_plugin("my-plugin", tmp_path, kind=kind)
    assert root == tmp_path / "my-plugin"
    assert [p.name for p in tmp_path.iterdir()] == ["my-plugin"]  # no staging folder left behind
    module = PLUGIN_KINDS[kind].module
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == sorted(["README.md", "pyproject.toml", "src/my_plugin/__init__.py", "src/my_plugin/py.typed",
                            f"src/my_plugin/{module}.py", "tests/test_my_plugin.py",
                            "tests/test_my_plugin_entry_point.py"])
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["name"] == "my-plugin" and project["version"] == "0.1.0"
    assert list(project["entry-points"]) == [f"lttoolkit.{REGISTRY_OF[kind]}"]
    points = project["entry-points"][f"lttoolkit.{REGISTRY_OF[kind]}"]
    assert list(points) == ["my_plugin"]
    target_module, _, attr = points["my_plugin"].partition(":")
    assert target_module == f"my_plugin.{module}"
    # The attribute the entry point names is defined at the top level of that module, with a docstring.
    tree = ast.parse((root / "src" / "my_plugin" / f"{module}.py").read_text(encoding="utf-8"))
    assert ast.get_docstring(tree)
    defined = {node.name: node for node in tree.body if isinstance(node, (ast.ClassDef, ast.FunctionDef))}
    assert attr in defined and ast.get_docstring(defined[attr])
    for path in root.rglob("*.py"):
        compile(path.read_text(encoding="utf-8"), str(path), "exec")
        assert "__" + "PACKAGE" not in path.read_text(encoding="utf-8")  # every placeholder filled
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "# my-plugin" in readme and f"lttoolkit.{REGISTRY_OF[kind]}" in readme


def test_component_name_option(tmp_path):
    root = new_plugin("my-plugin", tmp_path, kind="loss", component="sharp_ce")
    points = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["entry-points"]
    assert points == {"lttoolkit.losses": {"sharp_ce": "my_plugin.loss:SharpCeLoss"}}


# ---------------------------------------------------------------- generated packages at work


def _env(*paths: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LTTK_DISABLE_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([*(str(p) for p in paths), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def write_dist_info(site: Path, package_root: Path) -> None:
    """Write the ``.dist-info`` pip would install for ``package_root``: metadata and entry points."""
    project = tomllib.loads((package_root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    name, version = project["name"], project["version"]
    info = site / f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    lines = []
    for group, points in project["entry-points"].items():
        lines += [f"[{group}]", *(f"{key} = {value}" for key, value in points.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines), encoding="utf-8")


def run_generated_tests(test_dirs: list[Path], env: dict[str, str], cwd: Path) -> dict[str, str]:
    """Run pytest on ``test_dirs`` in a fresh process; ``{test id: outcome}`` from its JUnit report."""
    report = cwd / "report.xml"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--junitxml={report}",
         *map(str, test_dirs)],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=300,
    )
    assert report.is_file(), f"pytest did not run:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        status = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                status = child.tag
        module = (case.get("classname") or "").rsplit(".", 1)[-1]  # the test file's name, without folders
        outcomes[f"{module}.{case.get('name')}"] = status
    return outcomes


def listed_sources(env: dict[str, str], cwd: Path) -> dict[tuple[str, str], dict]:
    result = subprocess.run([sys.executable, "-m", "lttoolkit", "list-components", "--json"], env=env, cwd=cwd,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return {(kind, row["name"]): row for kind, rows in json.loads(result.stdout)["registries"].items() for row in rows}


def break_schedule(root: Path) -> None:
    """Make a generated schedule return alpha > 1, which its tests must catch."""
    module = root / "src" / package_name(root.name) / "schedule.py"
    source = module.read_text(encoding="utf-8")
    broken = source.replace("return 1.0 - progress**self.power", "return 2.0 - progress**self.power")
    assert broken != source
    module.write_text(broken, encoding="utf-8")


def test_generated_packages_pass_their_tests_and_are_listed(tmp_path):
    """Every kind, discoverable through a written dist-info; a broken copy makes its tests fail."""
    site = tmp_path / "site"
    roots = [new_plugin(dist_name(kind), tmp_path / "packages", kind=kind) for kind in KINDS]
    broken = new_plugin("lttk-scaffold-broken", tmp_path / "packages", kind="schedule")
    break_schedule(broken)
    for root in [*roots, broken]:
        write_dist_info(site, root)
    env = _env(site, *(root / "src" for root in [*roots, broken]))

    outcomes = run_generated_tests([root / "tests" for root in [*roots, broken]], env, tmp_path)
    for kind, root in zip(KINDS, roots):
        prefixes = (f"test_{package_name(root.name)}.", f"test_{package_name(root.name)}_entry_point.")
        mine = {test: status for test, status in outcomes.items() if test.startswith(prefixes)}
        assert len(mine) >= 4, (kind, mine)
        assert f"{prefixes[1]}test_entry_point_is_installed_and_listed" in mine, (kind, mine)
        assert set(mine.values()) == {"passed"}, (kind, mine)  # the installed-entry-point test too: no skip
    failed = {test.split("[")[0] for test, status in outcomes.items() if status == "failure"}
    assert failed == {"test_lttk_scaffold_broken.test_values_by_hand",
                      "test_lttk_scaffold_broken.test_alpha_in_unit_interval_and_non_increasing"}, outcomes

    rows = listed_sources(env, tmp_path)
    for kind, root in zip(KINDS, roots):
        row = rows[(REGISTRY_OF[kind], package_name(root.name))]
        assert row["source"] == f"{dist_name(kind)} 0.1.0" and row["status"] == "ok", row


@pytest.mark.slow
def test_pip_installed_packages_pass_their_tests_and_are_listed(tmp_path):
    """The real thing: ``pip install --no-deps --no-build-isolation`` into a folder, without network."""
    roots = [new_plugin(dist_name(kind), tmp_path / "packages", kind=kind) for kind in KINDS]
    target = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir",
         "--disable-pip-version-check", "--quiet", "--target", str(target), *map(str, roots)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"
    env = _env(target)  # the installed copies only: src/ is not on the path
    outcomes = run_generated_tests([root / "tests" for root in roots], env, tmp_path)
    assert outcomes and set(outcomes.values()) == {"passed"}, outcomes
    assert sum(test.endswith(".test_entry_point_is_installed_and_listed") for test in outcomes) == len(KINDS)
    rows = listed_sources(env, tmp_path)
    for kind, root in zip(KINDS, roots):
        row = rows[(REGISTRY_OF[kind], package_name(root.name))]
        assert row["source"] == f"{dist_name(kind)} 0.1.0" and row["status"] == "ok", row


# ---------------------------------------------------------------- the templates are code


def _template_files() -> list:
    return sorted((p for p in TEMPLATES.rglob("*.py")), key=str)


def test_every_kind_has_its_two_template_modules():
    names = {p.relative_to(TEMPLATES).as_posix() for p in _template_files()}
    for kind in KINDS:
        assert {f"components/{kind}.py", f"tests/{kind}.py"} <= names, kind
    assert {"package_init.py", "tests/entry_point.py"} <= names


@pytest.mark.parametrize("path", _template_files(), ids=lambda p: p.relative_to(TEMPLATES).as_posix())
def test_templates_are_python_modules_as_shipped(path):
    # Placeholders are identifiers (__ATTR__, __PACKAGE__): the file is Python before it is filled.
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    assert ast.get_docstring(tree), f"{path.name} needs a module docstring"
    pyflakes = pytest.importorskip("pyflakes.api")
    from pyflakes.reporter import Reporter
    import io

    out = io.StringIO()
    assert pyflakes.check(source, str(path), Reporter(out, out)) == 0, out.getvalue()


def test_a_pip_installed_dataset_plugin_is_listed_and_trains(tmp_path):
    """A third-party dataset, installed with pip, joins `lttk list-components datasets` and `lttk train`."""
    root = new_plugin("lttk-stripes", tmp_path / "packages", kind="dataset")
    target = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir",
         "--disable-pip-version-check", "--quiet", "--target", str(target), str(root)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"
    env = _env(target)
    row = listed_sources(env, tmp_path)[("datasets", "lttk_stripes")]
    assert row["source"] == "lttk-stripes 0.1.0" and row["status"] == "ok", row
    out = tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "lttoolkit", "train", "data.dataset=lttk_stripes", "model.type=ce",
         "model.backbone=resnet20_cifar", "data.batch_size=16", "train.epochs=1", "train.max_steps_per_epoch=2",
         "optim.warmup_epochs=0", f"output_dir={out}", "name=stripes", "--quiet"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    results = json.loads((out / "stripes" / "results.json").read_text(encoding="utf-8"))
    assert results["train_class_counts"] == [48, 24, 12, 6]
    assert 0.0 <= results["test"]["top1"] <= 100.0
