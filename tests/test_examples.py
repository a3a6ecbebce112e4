"""The scripts in examples/ run end to end with --fast and print what they did.

Each runs in a subprocess from an empty folder, as a user would run it, and must exit 0,
print its key lines and leave no file behind. The scripts run side by side, one per core,
each with ``OMP_NUM_THREADS=1``: tiny models are as fast on one thread, and processes that
share cores must not oversubscribe them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# script -> regular expressions its --fast output must match (hand-computed values where fixed).
EXPECTED: dict[str, list[str]] = {
    "build_and_predict.py": [
        r"built BilateralWrapper with backbone resnet20_cifar",
        r"recipe: method=bbn, samplers=\{'conventional': 'instance', 'rebalancing': 'reversed'\}, "
        r"loss=cross_entropy, schedule=parabolic",
        r"duplicated block: layer3\.2",
        r"predicted 8 images in [0-9.]+ s; top-1 [0-8]/8 correct",
    ],
    "train_bbn_fashion_mnist.py": [
        r"training bbn \(resnet20_cifar\) on embedded for 1 epoch\(s\), batch 16 per branch",
        r"train class counts: \[600, 359, 215, 129, 77, 46, 27, 16, 10, 6\]",
        r"epoch 0: alpha 1\.000, loss [0-9.]+, test top-1 [0-9.]+",  # parabolic: alpha = 1 at T = 0
        r"test top-1 [0-9.]+ \| many [0-9.]+ \| medium [0-9.]+ \| few [0-9.]+ \(last epoch\)",
        r"run folder: .*\(best\.pt, config\.yaml, last\.pt, metrics\.csv, metrics\.jsonl, results\.json\)",
    ],
    "plugin_in_30_lines.py": [
        r"load_plugin\('plugin_in_30_lines'\) registered \['losses:poly1', 'schedules:sigmoid'\]",
        r"schedules: 'sigmoid' from module plugin_in_30_lines",
        r"losses: 'poly1' from module plugin_in_30_lines",
        # 1 / (1 + exp(8 (t/10 - 0.5))): 0.982 at t=0, exactly 0.5 at t=5
        r"sigmoid alpha over 10 epochs: \[0\.982, 0\.961, 0\.917, 0\.832, 0\.69, 0\.5, 0\.31, 0\.168, 0\.083, 0\.039\]",
        r"trained with schedule \{'type': 'sigmoid', 'steepness': 8\.0\} and loss "
        r"\{'type': 'poly1', 'epsilon': 2\.0, 'reweight': 'sqrt_inverse'\}: test top-1 [0-9.]+ after 1 epoch",
    ],
    "two_stage_decoupling.py": [
        r"stage 1: ce for 1 epoch\(s\); best\.pt is epoch 0, selected on val",
        r"tau_norm chose tau = [0-9.]+ on the validation split",
        # 10% of each class held out: 600 -> 540, 6 -> 5 (at least one image stays in training)
        r"class counts of the training split \(validation held out\): \[540, 323, 193, 116, 69, 41, 24, 14, 9, 5\]",
        r"ce +test top-1 +[0-9.]+ \| many",
        r"crt +test top-1 +[0-9.]+ \| many",
        r"tau_norm +test top-1 +[0-9.]+ \| many",
    ],
    "read_inaturalist_json.py": [
        r"read 285 images of 8 classes from iNaturalist_tiny_train\.json",
        # long_tailed_counts(8, 120, 40): 120 * 40 ** (-i / 7), truncated
        r"class counts: \[120, 70, 41, 24, 14, 8, 5, 3\]",
        r"largest class 120, smallest 3: imbalance ratio 40\.0",
        r"many-shot \(more than 100 images\): 1 class \[0\]",
        r"medium-shot \(20 to 100 images\): 3 classes \[1, 2, 3\]",
        r"few-shot \(fewer than 20 images\): 4 classes \[4, 5, 6, 7\]",
        r"first entry: .*train_val2018/Plantae/0/0000\.jpg -> class 0, PIL image 8x8 RGB",
    ],
}


def test_every_example_script_is_tested() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py")}
    assert scripts == set(EXPECTED), "add the new example (and its key output) to EXPECTED"


def _run(script: str, folder: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)  # the plugin example must find its module by itself
    return subprocess.run([sys.executable, str(EXAMPLES / script), "--fast"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def example_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    """Every script run once with --fast, as many at a time as there are cores (one thread each)."""
    folders = {script: tmp_path_factory.mktemp(script.removesuffix(".py")) for script in EXPECTED}
    with ThreadPoolExecutor(max_workers=max(1, min(len(folders), os.cpu_count() or 1))) as pool:
        futures = {script: pool.submit(_run, script, folder) for script, folder in folders.items()}
        return {script: (future.result(), folders[script]) for script, future in futures.items()}


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs_fast_and_reports(script: str, example_runs) -> None:
    proc, folder = example_runs[script]
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    for pattern in EXPECTED[script]:
        assert re.search(pattern, proc.stdout), f"{script} --fast did not print /{pattern}/:\n{output[-4000:]}"
    assert list(folder.iterdir()) == [], "examples must clean up after --fast"


def _load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_official_inaturalist_json_is_converted_to_bbn_form(tmp_path: Path) -> None:
    from lttoolkit.data import load_json_annotations

    example = _load_example("read_inaturalist_json")
    official = {
        "images": [{"id": 10, "file_name": "train_val2018/Aves/2/a.jpg"},
                   {"id": 11, "file_name": "train_val2018/Fungi/0/b.jpg"}],
        "annotations": [{"id": 1, "image_id": 11, "category_id": 0}, {"id": 2, "image_id": 10, "category_id": 2}],
        "categories": [{"id": 0}, {"id": 1}, {"id": 2}],
    }
    converted = example.convert_official(official)
    assert converted == {
        "annotations": [{"fpath": "train_val2018/Fungi/0/b.jpg", "category_id": 0},
                        {"fpath": "train_val2018/Aves/2/a.jpg", "category_id": 2}],
        "num_classes": 3,
    }
    path = tmp_path / "bbn.json"
    path.write_text(json.dumps(converted), encoding="utf-8")
    dataset = load_json_annotations(path)
    assert dataset.num_classes == 3 and dataset.class_counts == [1, 0, 1]


def test_tiny_inaturalist_file_has_the_long_tailed_counts(tmp_path: Path) -> None:
    from lttoolkit.data import load_dataset, long_tailed_counts

    example = _load_example("read_inaturalist_json")
    path = example.write_tiny_inaturalist(tmp_path, num_classes=5, n_max=20, imbalance_ratio=10)
    dataset = load_dataset("json_annotations", root=tmp_path, split="train", annotations=str(path), check_files=True)
    assert dataset.class_counts == long_tailed_counts(5, 20, 10) == [20, 11, 6, 3, 2]
