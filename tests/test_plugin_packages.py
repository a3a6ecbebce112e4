"""The third-party packages under ``plugins/`` work end to end once installed.

Each package is installed for real (``pip install --no-deps --no-build-isolation
--no-index --target``, from a copy so the checkout gets no build folders) and
used from fresh Python processes: listed with its distribution name, built by
``lttoolkit.build``, trained for a few steps by ``python -m lttoolkit train``.
Each package's own test suite runs too (pytest here collects only ``tests/``
and ``lttoolkit/``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "plugins"
PACKAGES = {"lttk-extra-losses": "lttk_extra_losses", "lttk-remix": "lttk_remix"}
# (kind, name) -> distribution that must provide it
COMPONENTS = {
    ("losses", "seesaw"): "lttk-extra-losses",
    ("losses", "equalization"): "lttk-extra-losses",
    ("methods", "remix"): "lttk-remix",
    ("backbones", "tiny_convnet"): "lttk-remix",
}


def _env(*paths: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LTTK_DISABLE_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([*(str(p) for p in paths), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _run(args: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both packages pip-installed into a throwaway folder (no network, no build isolation)."""
    work = tmp_path_factory.mktemp("plugin-packages")
    ignore = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache")
    sources = [shutil.copytree(PLUGINS / dist, work / dist, ignore=ignore) for dist in PACKAGES]
    target = work / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir",
         "--disable-pip-version-check", "--quiet", "--target", str(target), *map(str, sources)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"
    for dist, package in PACKAGES.items():
        assert (target / package / "__init__.py").is_file()
        assert (target / f"{package}-0.1.0.dist-info" / "entry_points.txt").is_file(), dist
    return target


def test_listed_with_their_distribution_names(site, tmp_path):
    result = _run(["-m", "lttoolkit", "list-components", "--json"], env=_env(site), cwd=tmp_path)
    rows = {(kind, row["name"]): row for kind, entries in json.loads(result.stdout)["registries"].items()
            for row in entries}
    for key, dist in COMPONENTS.items():
        row = rows[key]
        assert row["source"] == f"{dist} 0.1.0", row
        assert row["status"] == "ok", row
        assert row["summary"], row  # taken from the docstring once the plugin is imported


BUILD_SCRIPT = r"""
import json, torch
from lttoolkit import build, LOSSES

out = {}
bbn = build("bbn", backbone="tiny_convnet", loss="seesaw", num_classes=10)
out["bbn"] = [type(bbn).__name__, bbn.split_at, bbn.recipe.loss.type, bbn.recipe.backbone.type]
bbn.eval()
out["bbn_logits"] = list(bbn(torch.randn(2, 3, 28, 28)).shape)

loss = LOSSES.build("seesaw", class_counts=[50, 10, 2], p=0.0, q=0.0)
logits, targets = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
out["seesaw_is_ce"] = torch.allclose(loss(logits, targets), torch.nn.functional.cross_entropy(logits, targets))
eql = build("bbn", backbone="tiny_convnet", num_classes=10, loss={"type": "equalization", "gamma": 0.5})
out["eql_options"] = eql.recipe.loss.options

remix = build("remix", backbone="resnet20_cifar", num_classes=10)
out["remix"] = [type(remix).__name__, remix.recipe.method, remix.recipe.samplers["main"].type,
                remix.recipe.options["kappa"]]
out["remix_rebuilt"] = type(remix.recipe.rebuild()).__name__
remix.on_train_start(class_counts=[100, 50, 30, 20, 10, 8, 6, 4, 2, 1])
remix.train()
from lttoolkit.methods.protocol import EpochInfo
value = remix.training_step([torch.randn(4, 3, 32, 32)], [torch.tensor([0, 1, 9, 3])], torch.nn.CrossEntropyLoss(),
                            EpochInfo(0, 1), remix).loss
value.backward()
out["remix_loss_finite"] = bool(torch.isfinite(value))
print(json.dumps(out))
"""


def test_buildable_through_lttoolkit(site, tmp_path):
    result = _run(["-c", BUILD_SCRIPT], env=_env(site), cwd=tmp_path)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["bbn"] == ["BilateralWrapper", "stages.2.0", "seesaw", "tiny_convnet"]
    assert out["bbn_logits"] == [2, 10]
    assert out["seesaw_is_ce"] is True
    assert out["eql_options"] == {"gamma": 0.5}
    assert out["remix"] == ["RemixModel", "remix", "instance", 3.0]
    assert out["remix_rebuilt"] == "RemixModel"
    assert out["remix_loss_finite"] is True


@pytest.mark.parametrize(
    ("overrides", "method"),
    [
        # Both plugins in one run: the plugin backbone is ~8x cheaper than ResNet-20 on the CPU.
        (["model.type=remix", "model.backbone=tiny_convnet"], "remix"),
        (["model.type=bbn", "model.backbone=tiny_convnet", "model.loss=seesaw"], "bbn"),
        pytest.param(["model.type=remix", "model.backbone=resnet20_cifar"], "remix", marks=pytest.mark.slow),
    ],
    ids=["remix", "bbn-seesaw", "remix-resnet20"],
)
def test_trainable_by_the_cli(site, tmp_path, overrides, method):
    out = tmp_path / "runs"
    _run(["-m", "lttoolkit", "train", *overrides, "data.batch_size=32", "train.max_steps_per_epoch=2",
          "train.epochs=1", "optim.warmup_epochs=0", f"output_dir={out}", "--quiet"], env=_env(site), cwd=tmp_path)
    (run_dir,) = out.iterdir()
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert results["method"] == method
    assert 0.0 <= results["test"]["top1"] <= 100.0
    (record,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert record["epoch"] == 0 and record["loss"] > 0
    assert (run_dir / "last.pt").is_file()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["model"]
    for override in overrides:  # the run used the plugin pieces asked for
        key, _, value = override.partition("=")
        field = saved[key.split(".")[1]]
        assert (field["type"] if isinstance(field, dict) else field) == value, (override, saved)


@pytest.mark.parametrize("dist", sorted(PACKAGES))
def test_package_own_test_suite(dist, tmp_path):
    # Run from the checkout's sources (src/ on PYTHONPATH), with the package's own pytest config.
    package_dir = PLUGINS / dist
    result = _run(["-m", "pytest", str(package_dir), "-q", "-p", "no:cacheprovider"],
                  env=_env(package_dir / "src"), cwd=package_dir)
    assert " passed" in result.stdout and " failed" not in result.stdout
