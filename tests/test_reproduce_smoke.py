"""Smoke tests of benchmarks/reproduce.py: the accumulating grid runner and its report.

``--quick`` trains ce, bbn and tau-norm (stage 2 from the ce run) for one epoch of
two steps on the embedded data. The tests check the run folders, the report's
keys and cells, that a second invocation skips finished runs, that an unfinished
run is resumed, and that a run whose estimate exceeds ``--max-minutes`` is not
started. They never check accuracy: two steps teach nothing. The two tests that train are
marked ``slow`` (run them with ``-m slow``); ``tests/test_benchmarks_smoke.py``
runs ``--quick`` once in the default suite.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "reproduce.py"
REPORT_KEYS = {"benchmark", "description", "quick", "command", "started_at", "wall_seconds", "machine", "settings",
               "results", "targets", "runs", "faithfulness", "this_invocation"}
ROW_KEYS = {"method", "imbalance_ratio", "order", "n", "seeds", "top1_mean", "top1_std", "many_shot_mean",
            "medium_shot_mean", "few_shot_mean", "head_mean", "middle_mean", "tail_mean"}


def _load_module() -> Any:
    spec = importlib.util.spec_from_file_location("lttk_bench_reproduce", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


reproduce = _load_module()


def _run(tmp: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "160"}
    out = tmp / "reproduce.json"
    cmd = [sys.executable, str(SCRIPT), "--quick", "--plain", "--out", str(out), "--out-dir", str(tmp / "runs"), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc, json.loads(out.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("reproduce")
    _, report = _run(tmp)
    return tmp, report


@pytest.mark.slow  # three trainings in subprocesses: ~40 s on 2 idle cores
def test_quick_run_trains_the_grid_and_writes_the_report(first_run: tuple[Path, dict[str, Any]]) -> None:
    tmp, report = first_run
    assert REPORT_KEYS <= report.keys(), REPORT_KEYS - report.keys()
    assert report["benchmark"] == "reproduce" and report["quick"] is True
    names = {"ce-ir10-s0-natural", "bbn-ir10-s0-natural", "tau_norm-ir10-s0-natural"}
    assert report["this_invocation"] == dict.fromkeys(names, "trained")
    assert {(row["method"], row["n"], row["seeds"][0]) for row in report["results"]} == {
        ("ce", 1, 0), ("bbn", 1, 0), ("tau_norm", 1, 0)}
    for row in report["results"]:
        assert ROW_KEYS <= row.keys(), ROW_KEYS - row.keys()
        assert 0.0 <= row["top1_mean"] <= 100.0 and row["top1_std"] is None  # one seed: no std
    root = tmp / "runs" / "quick"
    tau = json.loads((root / "tau_norm-ir10-s0-natural" / "results.json").read_text(encoding="utf-8"))
    assert tau["init_from"].endswith("ce-ir10-s0-natural/last.pt")  # stage 2 from the ce run of the cell
    assert 0.0 <= tau["calibration"]["tau"] <= 2.0
    assert not (root / "tau_norm-ir10-s0-natural" / "last.pt").exists()  # pruned: tau_norm is not in KEEP_LAST
    ce = root / "ce-ir10-s0-natural"
    assert (ce / "last.pt").is_file() and not (ce / "best.pt").exists()
    assert not list((root / ".locks").glob("*"))  # every run's lock is released
    markdown = (tmp / "reproduce.md").read_text(encoding="utf-8")
    assert "| bbn |" in markdown and "(n=1)" in markdown and "*bbn − ce*" in markdown
    alpha = report["faithfulness"]["alpha"]
    assert alpha and alpha[0]["alpha_per_epoch"] == [1.0]  # 1 - (0/1)^2 at the only epoch
    sampler = report["faithfulness"]["reversed_sampler"][0]
    assert sampler["max_abs_diff"] < 0.1
    curves = {c["method"]: c for c in report["faithfulness"]["training_loss"]}
    assert list(curves) == ["ce", "bbn"]  # ce first: the reference row above bbn's
    for method, curve in curves.items():
        logged = [json.loads(line)["loss"] for line in
                  (root / f"{method}-ir10-s0-natural" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
        assert curve["n"] == 1 and curve["loss_per_epoch"] == logged  # one seed: the mean is the run's own loss
    assert "| IR 10, natural | bbn | 1 |" in markdown


@pytest.mark.slow
def test_second_invocation_skips_finished_runs_and_resumes_unfinished(first_run: tuple[Path, dict[str, Any]]) -> None:
    tmp, first = first_run
    bbn = tmp / "runs" / "quick" / "bbn-ir10-s0-natural"
    (bbn / "results.json").unlink()  # as if the session ended after the last checkpoint was written
    proc, report = _run(tmp)
    assert report["this_invocation"] == {"ce-ir10-s0-natural": "done before", "bbn-ir10-s0-natural": "trained",
                                         "tau_norm-ir10-s0-natural": "done before"}
    commands = [line for line in (bbn / "train.log").read_text(encoding="utf-8").splitlines() if line.startswith("$ ")]
    assert len(commands) == 2 and f"--resume {bbn}" in commands[-1]
    before = {r["run"]: r["top1"] for r in first["runs"]}
    assert {r["run"]: r["top1"] for r in report["runs"]} == before  # resuming after the last epoch changes nothing
    assert "resume bbn-ir10-s0-natural" in proc.stdout and "start ce" not in proc.stdout


def test_a_run_that_would_not_finish_is_not_started(tmp_path: Path) -> None:
    args = SimpleNamespace(quick=False, epochs=10, n_max=6000, crt_epochs=2, threads=None)
    root = tmp_path / "epochs10-nmax6000"
    ce = root / "ce-ir100-s0-natural"
    ce.mkdir(parents=True)
    images = reproduce.train_images(100, 6000, False)
    # An earlier ce invocation: 2 epochs in 600 s, so a ce epoch takes 300 s and a bbn epoch ~600 s.
    ce.joinpath("wall.jsonl").write_text(json.dumps({"method": "ce", "wall_s": 600.0, "epochs_before": 0,
                                                     "epochs_after": 2, "returncode": 0,
                                                     "train_images": images}) + "\n", encoding="utf-8")
    key = reproduce.RunKey("bbn", 100.0, 0, "natural")
    history = reproduce.wall_history(root, args)
    assert reproduce.estimate_seconds(key, 10, history, args) == pytest.approx(600.0 * 10)
    status = reproduce.run_one(key, args, root, deadline=time.time() + 30 * 60)
    assert status.startswith("not started: needs ~100 min")
    assert not (root / key.name).exists()
    # Stage 2 waits for its ce run instead of training from scratch.
    assert reproduce.run_one(reproduce.RunKey("crt", 100.0, 0, "natural"), args, root, None).startswith("waits for")


def test_grid_order_fills_the_first_cell_first() -> None:
    args = reproduce.parse_args(["--seeds", "0,1", "--ratios", "100,10"])
    keys = reproduce.grid(args)
    assert len(keys) == 9 * 2 * 2 * 2
    first = keys[:9]
    assert {(k.ratio, k.seed, k.order) for k in first} == {(100.0, 0, "natural")}
    assert [k.method for k in first[:2]] == ["ce", "bbn"]
    assert all(keys.index(reproduce.RunKey("ce", k.ratio, k.seed, k.order)) < keys.index(k)
               for k in keys if k.method in reproduce.STAGE1_OF)


def test_budget_overrides_follow_the_stated_recipe(tmp_path: Path) -> None:
    args = reproduce.parse_args(["--epochs", "30"])
    key = reproduce.RunKey("bbn", 100.0, 2, "permuted")
    overrides = reproduce.run_overrides(key, args, tmp_path / key.name, None)
    for expected in ("optim.milestones=[18, 24]", "optim.gamma=0.1", "optim.warmup_epochs=2", "train.epochs=30",
                     "data.n_max=6000", "data.permute_classes=true", "data.val_fraction=0.1", "data.in_chans=1",
                     "model.backbone=resnet32_cifar", "data.dataset=fashion_mnist", "seed=2"):
        assert expected in overrides, expected
    crt = reproduce.run_overrides(reproduce.RunKey("crt", 10.0, 0, "natural"), args, tmp_path / "crt", tmp_path / "ce")
    assert "train.epochs=3" in crt and f"init_from={tmp_path / 'ce' / 'last.pt'}" in crt
    from lttoolkit.engine.config import load_config

    load_config(None, overrides)  # every override names a real field with a valid value
    load_config(None, crt)
    # float32 NCHW whatever the quick-start config sets: `lttk train` without a CONFIG starts from it.
    from lttoolkit.engine.trainer import quickstart_config_path

    config = load_config(quickstart_config_path(), overrides)
    assert config.train.amp is False and config.train.channels_last is False
    bf16 = load_config(quickstart_config_path(), reproduce.run_overrides(
        key, reproduce.parse_args(["--precision", "bf16"]), tmp_path / key.name, None))
    assert bf16.train.amp is True and bf16.train.amp_dtype == "bfloat16" and bf16.train.channels_last is True
    # The data folder is the package default unless --data-root names one (the GPU grid carries its files).
    assert config.data.root is None
    rooted = load_config(quickstart_config_path(), reproduce.run_overrides(
        key, reproduce.parse_args(["--data-root", str(tmp_path / "fmnist")]), tmp_path / key.name, None))
    assert rooted.data.root == str(tmp_path / "fmnist") and rooted.data.dataset == "fashion_mnist"


def test_readme_table_rounds_and_leaves_missing_cells_empty() -> None:
    rows = [{"method": "bbn", "imbalance_ratio": 100.0, "order": "permuted", "n": 1, "top1_mean": 70.04,
             "top1_std": None, "few_shot_mean": 55.56, "few_shot_std": None},
            {"method": "ce", "imbalance_ratio": 100.0, "order": "natural", "n": 3, "top1_mean": 76.42,
             "top1_std": 3.6, "few_shot_mean": 61.32, "few_shot_std": 14.73},
            {"method": "ce", "imbalance_ratio": 10.0, "order": "natural", "n": 3, "top1_mean": 90.0,
             "top1_std": 1.0, "few_shot_mean": None, "few_shot_std": None}]
    lines = reproduce.readme_table(rows).splitlines()
    assert lines[0].startswith("| method (IR 100) |")  # the largest IR only
    assert lines[2:] == ["| ce | 76.4 ± 3.6 (3) | 61.3 ± 14.7 | – | – |",  # report order: ce before bbn
                         "| bbn | – | – | 70.0 (1) | 55.6 |"]


def test_readme_carries_the_converged_report_table() -> None:
    """The README's results table is the one the committed report makes (rerun --report, then paste)."""
    root = SCRIPT.parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert readme.count(reproduce.README_START) == 1 and readme.count(reproduce.README_END) == 1
    block = readme.split(reproduce.README_START)[1].split(reproduce.README_END)[0].strip()
    report = json.loads((root / "benchmarks" / "results" / "reproduce_converged.json").read_text(encoding="utf-8"))
    assert block == reproduce.readme_table(report["results"])
    md = (root / "benchmarks" / "results" / "reproduce_converged.md").read_text(encoding="utf-8")
    assert block in md


def _fake_run(run_dir: Path, method: str, seed: int, top1: float, amp: Any, precision: str | None) -> None:
    run_dir.mkdir(parents=True)
    counts = [1000, 400, 150, 60, 20, 10]
    test = {"top1": top1, "many_shot": top1, "medium_shot": top1, "few_shot": top1,
            "per_class_accuracy": [top1] * len(counts)}
    results = {"method": method, "seed": seed, "epochs": 60, "test": test, "train_class_counts": counts}
    if precision is not None:
        results["precision"] = precision
    (run_dir / "results.json").write_text(json.dumps(results), encoding="utf-8")
    (run_dir / "config.yaml").write_text(
        f"data: {{imbalance_ratio: 100.0, permute_classes: false}}\ntrain: {{amp: {amp}}}\n", encoding="utf-8")
    (run_dir / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "loss": 1.0}) + "\n", encoding="utf-8")


def test_a_run_of_another_precision_is_left_out_of_the_tables(tmp_path: Path) -> None:
    # The grid once took bf16 autocast from the quick-start config; such a run must not enter fp32 means.
    args = ["--epochs", "60", "--n-max", "1000", "--ratios", "100", "--out-dir", str(tmp_path / "runs"),
            "--plots-dir", str(tmp_path / "plots"), "--plain", "--report"]
    root = reproduce.budget_dir(reproduce.parse_args(args))
    _fake_run(root / "ce-ir100-s0-natural", "ce", 0, 70.0, "auto", None)           # old fp32 record
    _fake_run(root / "ce-ir100-s1-natural", "ce", 1, 80.0, "false", "float32, NCHW")
    _fake_run(root / "ce-ir100-s2-natural", "ce", 2, 10.0, "true", None)           # leaked bf16
    _fake_run(root / "rs-ir100-s0-natural", "rs", 0, 10.0, "false", "bfloat16 autocast, channels_last")
    out = tmp_path / "report.json"
    assert reproduce.main([*args, "--out", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert {r["run"] for r in report["excluded_runs"]} == {"ce-ir100-s2-natural", "rs-ir100-s0-natural"}
    (ce,) = report["results"]
    assert ce["method"] == "ce" and ce["n"] == 2 and ce["top1_mean"] == pytest.approx(75.0)
    assert "ce-ir100-s2-natural (bf16)" in out.with_suffix(".md").read_text(encoding="utf-8")


def test_permutation_test_matches_hand_enumeration() -> None:
    # a = [1, 2] against b = [3, 4, 10]: 10 splits; |mean_a - mean_b| >= 25/6 for {1,2}, {3,10}, {4,10},
    # and the largest gap, 5, only for {4,10}.
    test = reproduce.permutation_test({"natural": [1.0, 2.0]}, {"natural": [3.0, 4.0, 10.0]})
    assert test["diff"] == pytest.approx(1.5 - 17 / 3)
    assert test["p"] == pytest.approx(3 / 10) and test["p_min"] == pytest.approx(1 / 10)
    assert (test["n_a"], test["n_b"]) == (2, 3)
    # Two strata of [1, 2] against [3, 4]: 6 × 6 splits, as extreme only when both strata split alike.
    strat = reproduce.permutation_test({"natural": [1.0, 2.0], "permuted": [1.0, 2.0]},
                                       {"natural": [3.0, 4.0], "permuted": [3.0, 4.0]})
    assert strat["diff"] == pytest.approx(-2.0) and strat["p"] == pytest.approx(2 / 36)
    # Unequal strata: a = {n: [1, 2], p: [10]}, b = {n: [3], p: [11, 12]}. Statistic: the mean of the two
    # within-order gaps. Order n's 3 splits give gaps -1.5, 0, +1.5 (a = {1,2}, {1,3}, {2,3}); order p's
    # the same (a = {10}, {11}, {12}); observed (-1.5 - 1.5) / 2 = -1.5. |mean| >= 1.5 for (-1.5, -1.5) and
    # (+1.5, +1.5) only: p = 2 / 9, and nothing is larger: p_min = 2 / 9.
    uneven = reproduce.permutation_test({"natural": [1.0, 2.0], "permuted": [10.0]},
                                        {"natural": [3.0], "permuted": [11.0, 12.0]})
    assert uneven["diff"] == pytest.approx(-1.5)
    assert uneven["p"] == pytest.approx(2 / 9) and uneven["p_min"] == pytest.approx(2 / 9)
    # Labels are never swapped across strata: a constant offset between orders changes nothing.
    shifted = reproduce.permutation_test({"natural": [1.0, 2.0], "permuted": [51.0, 52.0]},
                                         {"natural": [3.0, 4.0], "permuted": [53.0, 54.0]})
    assert shifted["p"] == pytest.approx(2 / 36)
    # A stratum only one side has is left out; no shared stratum, no test.
    assert reproduce.permutation_test({"natural": [1.0], "permuted": [9.0, 9.5]},
                                      {"natural": [2.0]})["n_a"] == 1
    assert reproduce.permutation_test({"permuted": [1.0]}, {"natural": [2.0]})["p"] is None


def test_bbn_is_compared_with_every_method_at_the_largest_ratio() -> None:
    def run(method: str, order: str, top1: float, ratio: float = 100.0) -> dict[str, Any]:
        return {"method": method, "order": order, "imbalance_ratio": ratio, "top1": top1,
                "few_shot": None if method == "rs" else top1 - 10}

    runs = [run("bbn", "natural", 70.0), run("bbn", "natural", 72.0), run("bbn", "permuted", 60.0),
            run("ce", "natural", 75.0), run("ce", "natural", 77.0), run("ce", "permuted", 61.0),
            run("rs", "natural", 80.0), run("ce", "natural", 10.0, ratio=10.0)]
    rows = {r["against"]: r for r in reproduce.against(runs, "bbn")}
    assert list(rows) == ["ce", "rs"]
    ce = rows["ce"]
    assert (ce["top1_n_a"], ce["top1_n_b"]) == (3, 3)  # the IR 10 run is not pooled in
    assert ce["top1_diff"] == pytest.approx(((71 - 76) + (60 - 61)) / 2)  # each order counts the same
    assert ce["top1_p"] == pytest.approx(
        reproduce.permutation_test({"natural": [70.0, 72.0], "permuted": [60.0]},
                                   {"natural": [75.0, 77.0], "permuted": [61.0]})["p"])
    assert rows["rs"]["top1_n_b"] == 1 and rows["rs"]["few_shot_p"] is None  # rs has no few-shot value
    lines = reproduce.comparison_table(list(rows.values()))
    assert lines[5].startswith("| ce | 3 / 3 | -3.00 |") and lines[6].startswith("| rs | 2 / 1 | -9.00 |")


def test_a_run_another_invocation_is_training_is_not_trained_twice(tmp_path: Path) -> None:
    import socket

    # Two shells with overlapping --methods once trained one run into one folder at the same time.
    args = reproduce.parse_args(["--epochs", "60", "--n-max", "1000", "--ratios", "100", "--out-dir", str(tmp_path)])
    key = reproduce.RunKey("rs", 100.0, 0, "permuted")
    root = tmp_path / "budget"
    lock = root / ".locks" / f"{key.name}.lock"
    lock.parent.mkdir(parents=True)
    host = socket.gethostname()
    lock.write_text(f"{host} {os.getpid()}\n", encoding="utf-8")  # held by a live process (this one)
    status = reproduce.run_one(key, args, root, None)
    assert status.startswith("skipped: another invocation is training it") and str(lock) in status
    assert not (root / key.name).exists() and not (root / ".logs").exists()  # nothing started, nothing written
    assert lock.read_text(encoding="utf-8") == f"{host} {os.getpid()}\n"  # and the holder keeps its lock
    # A lock whose process has ended is taken over; one from another host is respected.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lock.write_text(f"{host} {gone.pid}\n", encoding="utf-8")
    assert reproduce.claim(lock) is None and lock.read_text(encoding="utf-8").split() == [host, str(os.getpid())]
    lock.write_text("another-host 1\n", encoding="utf-8")
    assert reproduce.claim(lock) == "another-host 1"
    # A finished run is reported as such without taking its lock.
    (root / key.name).mkdir()
    (root / key.name / "results.json").write_text("{}", encoding="utf-8")
    assert reproduce.run_one(key, args, root, None) == "done before"


def test_permutation_test_samples_when_there_are_too_many_splits() -> None:
    # 10 seeds against 10 in two orders: 184,756² splits, far past EXACT_SPLITS.
    low, high = [float(v) for v in range(10)], [float(v) for v in range(100, 110)]
    started = time.perf_counter()
    apart = reproduce.permutation_test({"natural": low, "permuted": low}, {"natural": high, "permuted": high})
    assert time.perf_counter() - started < 30
    assert apart["diff"] == pytest.approx(-100.0)
    # No sampled split is as extreme as the observed one: p is its floor, 1 / (draws + 1).
    assert apart["p"] == pytest.approx(1 / (reproduce.MONTE_CARLO_DRAWS + 1)) == apart["p_min"]
    mixed = [float(v) for v in range(0, 20, 2)], [float(v) for v in range(1, 21, 2)]
    level = reproduce.permutation_test({"natural": mixed[0]}, {"natural": mixed[1]})  # C(20, 10) = 184,756
    assert level["diff"] == pytest.approx(-1.0) and level["p"] > 0.5  # interleaved values: no real gap
