"""Smoke tests of the benchmark scripts in benchmarks/: each runs with ``--quick`` and writes its report.

Benchmarks measure, they do not assert: these tests check that every script
runs to the end (exit 0) and writes a JSON report with the documented keys,
never how fast anything was. Every ``benchmarks/*.py`` script is run, so a new
benchmark is smoke-tested by being added.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
# reproduce.py trains for real even in --quick mode: tests/test_reproduce_smoke.py covers it
# (slow-marked); scaling launches torchrun twice, so it is slow-marked here.
_SLOW = {"reproduce", "scaling"}
SCRIPTS = [
    pytest.param(stem, marks=pytest.mark.slow) if stem in _SLOW else stem
    for stem in sorted(p.stem for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))
]

REPORT_KEYS = {"benchmark", "description", "quick", "command", "started_at", "wall_seconds", "machine", "settings",
               "results", "targets"}
MACHINE_KEYS = {"cpu_model", "logical_cores", "usable_cores", "torch_version", "timm_version", "torch_threads", "gpu",
                "load_average_start", "load_average_end"}
# Keys of each result row, per benchmark (a benchmark missing here gets the common checks only).
ROW_KEYS = {
    "step_overhead": {"model", "phase", "images_per_step", "bbn_ms", "plain_ms", "ratio", "target", "status"},
    "samplers": {"sampler", "construct_s", "indices_s", "iterate_s"},
    "data_pipeline": {"variant", "num_workers", "epoch_s", "images_per_s", "ratio"},
    "cli_latency": {"command", "median_s", "ratio_to_import_timm"},
    "scaling": {"processes", "threads_per_process", "steps_per_s", "images_per_s", "efficiency"},
    "gpu_step": {"model", "phase", "bbn_ms", "plain_ms", "bbn_steps_per_s", "ratio", "status"},
    "reproduce": {"method", "imbalance_ratio", "order", "n", "top1_mean", "top1_std"},
    "train_speed": {"variant", "method", "images_per_step", "images_per_second", "speedup_over_fp32_nchw"},
    "gpu_check": {"part", "what", "value"},
    "metrics_scale": {"classes", "accumulator", "state_bytes", "temporary_bytes_per_batch", "seconds",
                      "results_json_bytes"},
    "ride_step": {"model", "phase", "variant", "images_per_step", "ms", "ratio_to_plain", "ratio_to_hand",
                  "flops_ratio_to_plain"},
}
EXTRA_ARGS: dict[str, list[str]] = {}


def run_script(name: str, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    # One thread: the smoke runs share the machine with other tests, and oversubscribed
    # OpenMP threads make tiny models many times slower.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "160"}
    cmd = [sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick", "--plain", "--out", str(out),
           *EXTRA_ARGS.get(name, []), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc, json.loads(out.read_text(encoding="utf-8"))


def check_common(report: dict[str, Any], name: str) -> None:
    assert REPORT_KEYS <= report.keys(), REPORT_KEYS - report.keys()
    assert report["benchmark"] == name and report["quick"] is True
    assert MACHINE_KEYS <= report["machine"].keys(), MACHINE_KEYS - report["machine"].keys()
    assert report["machine"]["logical_cores"] >= 1 and report["machine"]["cpu_model"]
    for verdict in report["targets"]:
        assert {"name", "value", "comparison", "target", "status"} <= verdict.keys()
        assert verdict["status"] in {"PASS", "MISS"}


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_quick_run_writes_its_report(name: str, tmp_path: Path) -> None:
    proc, report = run_script(name, tmp_path / f"{name}.json")
    check_common(report, name)
    if report.get("skipped"):  # gpu_step without CUDA
        assert "no CUDA device: skipped" in proc.stdout
        assert report["results"] == []
        return
    assert report["results"], "a benchmark that ran must report results"
    for row in report["results"]:
        assert ROW_KEYS.get(name, set()) <= row.keys(), ROW_KEYS[name] - row.keys()


def test_gpu_step_code_path_runs_on_the_cpu(tmp_path: Path) -> None:
    # CI has no GPU: run the GPU script's own steps on the CPU so its code is exercised.
    _, report = run_script("gpu_step", tmp_path / "gpu.json", "--device", "cpu")
    check_common(report, "gpu_step")
    assert report["skipped"] is False
    assert {row["phase"] for row in report["results"]} == {"train", "inference"}


def test_inaturalist_profile_has_the_published_size_and_extremes() -> None:
    spec = importlib.util.spec_from_file_location("lttk_bench_samplers", BENCHMARKS / "samplers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    counts, gamma = module.long_tailed_counts(437_513, 8_142, 1_000, 2)
    # iNaturalist 2018: 437,513 training images, 8,142 classes, 1,000 .. 2 per class.
    assert (sum(counts), len(counts), counts[0], counts[-1]) == (437_513, 8_142, 1_000, 2)
    assert counts == sorted(counts, reverse=True)
    assert 0 < gamma < 1  # the plain exponential profile (gamma = 1) would hold ~1.3 M images
    labels = module.make_labels(counts[:5] + [1])
    assert sorted(map(labels.count, set(labels)), reverse=True) == counts[:5] + [1]
