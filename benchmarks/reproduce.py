"""Reproduction on real long-tailed Fashion-MNIST: BBN against eight long-tail methods.

The data is Fashion-MNIST (Xiao et al., "Fashion-MNIST: a Novel Image Dataset for
Benchmarking Machine Learning Algorithms", arXiv 2017), Debian's files in
``/usr/share/datasets/fashion-mnist``, made long-tailed with the CIFAR-LT protocol
of Cao et al. (NeurIPS 2019) that BBN (Zhou et al., CVPR 2020) reuses: class ``k``
of the head-first order keeps ``int(n_max * IR ** (-k / 9))`` training images, at
imbalance ratios IR 100 and 10. The model is ``resnet32_cifar`` in a one-channel
form (``data.in_chans=1``), trained with the BBN recipe scaled to a CPU budget.

Methods: ``ce``, ``rs``, ``rw``, ``ldam_drw`` (Cao et al. 2019), ``balanced_softmax``
(Ren et al. 2020), ``logit_adjust`` (Menon et al. 2021), ``crt`` and ``tau_norm``
(decoupling stage 2, Kang et al. 2020, from the ``ce`` run of the same IR, seed and
class order), ``bbn`` and ``ride`` (Wang et al. 2021: three experts on a shared trunk, without
the expert-assignment router). Each (method, IR, seed, class order) is one run folder.

Class order: in the natural order the tail classes (bag, ankle boot) are easy and
the confusable ones (shirt, T-shirt, pullover, coat) sit in the head and middle, so
every cell is also run with the head-first order permuted by the seed
(``data.permute_classes=true``).

The budget (``--epochs E``, default 30): SGD momentum 0.9, lr 0.1, weight decay 2e-4,
batch 128, linear warm-up for 2 epochs, lr x0.1 at 60% and 80% of the epochs (BBN's
CIFAR recipe is 200 epochs with milestones 120/160). cRT re-trains the classifier
for ``max(2, round(E * 10 / 90))`` epochs (Kang et al.: 10 epochs after a 90-epoch
stage 1) with class-balanced sampling, lr 0.1, cosine decay, no warm-up; tau-norm
trains nothing and picks tau on the validation split. Every run holds out 10% of
each class of the long-tailed set as validation (``data.val_fraction=0.1``, the
same split for every method of an (IR, seed, order)), so training uses 90% of it.
The numbers reported are those of the last epoch on the test set: the model is
never selected on the test set.

The grid is far more CPU time than one session, so the script accumulates: a
finished run (``results.json``) is skipped, an unfinished one resumed from its
``last.pt``, and ``--max-minutes`` starts no run its estimate says would not finish
(the estimate comes from the wall time of earlier runs, per training image).
``--report`` only collects what is finished into ``results/reproduce.json``,
``results/reproduce.md`` and plots in ``docs/assets/reproduce/``, where the
documentation's benchmarks page shows them (matplotlib only if installed; with
``--quick`` or ``--out`` the plots go beside the report); a training invocation ends
with the same report.

Run: ``python benchmarks/reproduce.py --max-minutes 170 --threads 1`` (``--quick``
for a one-minute smoke test on the embedded data).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

NAME = "reproduce"
DESCRIPTION = ("top-1 and many/medium/few-shot accuracy of BBN and eight long-tail methods on real Fashion-MNIST "
               "made long-tailed (IR 100 and 10, natural and permuted class order), resnet32_cifar, mean and std "
               "over seeds")

# Run order inside one (IR, order, seed) block: the headline pair first, then the stage-2
# methods that need only the ce run (cheap), then the other single-branch methods.
METHODS = ("ce", "bbn", "tau_norm", "crt", "lws", "rs", "rw", "drw", "ldam_drw", "cb_focal", "balanced_softmax",
           "logit_adjust", "ride")
STAGE1_OF = {"crt": "ce", "lws": "ce", "tau_norm": "ce"}
# Methods of the first (short-budget) grid; the default selection when --methods is not given.
SHORT_METHODS = ("ce", "bbn", "tau_norm", "crt", "rs", "rw", "ldam_drw", "balanced_softmax", "logit_adjust")
# Row order of the report tables.
REPORT_ORDER = ("ce", "rs", "rw", "drw", "ldam_drw", "cb_focal", "balanced_softmax", "logit_adjust", "crt", "lws",
                "tau_norm", "bbn", "ride")
# Stage-2 methods that re-train the classifier for --crt-epochs (cosine, no warm-up).
CLASSIFIER_RETRAINING = ("crt", "lws")
# Cost of one epoch relative to ce on the same data, for runs without a history of their own:
# bbn feeds two streams through the network; cRT trains only the classifier; tau-norm scores
# the validation split once per tau of its grid (21) and the test split once; ride runs the first
# stage once and three 3/4-wide copies of the other two (about 1.5 times ResNet-32's FLOPs).
COST_UNITS = {"bbn": 2.0, "crt": 0.45, "lws": 0.45, "tau_norm": 0.6, "ride": 1.5}
# Checkpoints kept after a run finishes: ce feeds the stage-2 runs; ce, rs, rw and bbn are
# the classifiers of BBN's weight-norm figure (Zhou et al. 2020, Fig. 5).
KEEP_LAST = {"ce", "rs", "rw", "bbn"}
ORDERS = ("natural", "permuted")
METRICS = ("top1", "many_shot", "medium_shot", "few_shot", "head", "middle", "tail")
METRIC_LABELS = {"top1": "top-1", "many_shot": "many", "medium_shot": "medium", "few_shot": "few",
                 "head": "head 3", "middle": "middle 4", "tail": "tail 3"}
# The per-class plots' two panels (ce and bbn are in both).
PLOT_PANELS = (("re-sampling and re-weighting", ("rs", "rw", "drw", "ldam_drw", "cb_focal", "balanced_softmax",
                                                 "logit_adjust")),
               ("decoupling and experts", ("crt", "lws", "tau_norm", "ride")))
VAL_FRACTION = 0.1
SAFETY = 1.15  # estimates are multiplied by this before a run is started against --max-minutes
# The comparison test enumerates every split up to this many; beyond (many seeds) it samples.
EXACT_SPLITS = 200_000
MONTE_CARLO_DRAWS = 20_000


@dataclass(frozen=True)
class RunKey:
    """One cell of the grid."""

    method: str
    ratio: float
    seed: int
    order: str

    @property
    def name(self) -> str:
        return f"{self.method}-ir{self.ratio:g}-s{self.seed}-{self.order}"


# --------------------------------------------------------------------------- the budget
def crt_epochs(epochs: int) -> int:
    """cRT epochs for a stage 1 of ``epochs``: Kang et al.'s 10 after 90, at least 2.

    >>> crt_epochs(30), crt_epochs(10), crt_epochs(90)
    (3, 2, 10)
    """
    return max(2, round(epochs * 10 / 90))


def milestones(epochs: int) -> list[int]:
    """lr x0.1 at 60% and 80% of training (BBN's CIFAR recipe: 120 and 160 of 200).

    >>> milestones(30), milestones(10), milestones(200)
    ([18, 24], [6, 8], [120, 160])
    """
    return sorted({max(1, round(0.6 * epochs)), max(1, round(0.8 * epochs))})


def run_overrides(key: RunKey, args: Any, run_dir: Path, stage1_dir: Path | None) -> list[str]:
    """The ``lttk train`` overrides of one run."""
    quick = args.quick
    data = [f"data.dataset={'embedded' if quick else 'fashion_mnist'}", "data.in_chans=1",
            f"data.val_fraction={VAL_FRACTION}", "data.batch_size=128", "data.num_workers=0",
            f"data.imbalance_ratio={key.ratio:g}", f"data.permute_classes={str(key.order == 'permuted').lower()}"]
    if args.n_max is not None:
        data.append(f"data.n_max={args.n_max}")
    if getattr(args, "data_root", None) is not None and not quick:
        data.append(f"data.root={Path(args.data_root).resolve()}")
    epochs = args.epochs
    optim = ["optim.lr=0.1", "optim.momentum=0.9", "optim.weight_decay=2e-4"]
    if key.method in CLASSIFIER_RETRAINING:
        epochs = args.crt_epochs
        optim += ["optim.schedule=cosine", "optim.warmup_epochs=0"]
    elif key.method == "tau_norm":
        epochs = 1  # nothing is trained; the trainer still counts one (empty) epoch
        optim += ["optim.warmup_epochs=0"]
    else:
        optim += ["optim.schedule=multistep", f"optim.warmup_epochs={min(args.warmup_epochs, epochs - 1)}",
                  f"optim.milestones={milestones(epochs)}", f"optim.gamma={args.gamma:g}"]
    train = [f"train.epochs={epochs}", f"train.device={args.device}",
             f"train.eval_every={max(1, min(args.eval_every, epochs))}"]
    if quick:
        train.append("train.max_steps_per_epoch=2")
    # Precision and memory layout are pinned, never inherited: `lttk train` starts from the quick-start
    # config, whose bfloat16 autocast would otherwise leak into the float32 grid.
    if args.precision == "bf16":
        train += ["train.amp=true", "train.amp_dtype=bfloat16", "train.channels_last=true"]
    else:
        train += ["train.amp=false", "train.channels_last=false"]
    out = [f"seed={key.seed}", f"output_dir={run_dir.parent}", f"name={run_dir.name}",
           f"model.type={key.method}", "model.backbone=resnet32_cifar", *data, *optim, *train]
    if stage1_dir is not None:
        out.append(f"init_from={stage1_dir / 'last.pt'}")
    return out


def train_images(ratio: float, n_max: int | None, quick: bool) -> float:
    """Training images of a run (90% of the long-tailed set), for time estimates only."""
    from lttoolkit.data import long_tailed_counts

    return (1 - VAL_FRACTION) * sum(long_tailed_counts(10, n_max or 6000, ratio))


# --------------------------------------------------------------------------- run folders
def budget_dir(args: Any) -> Path:
    """Runs of one budget live together; another budget never resumes or mixes with them."""
    tag = "quick" if args.quick else f"epochs{args.epochs}-nmax{args.n_max}"
    if not args.quick and (args.warmup_epochs, args.gamma) != (2, 0.1):  # the first grid's schedule has no suffix
        tag += f"-warmup{args.warmup_epochs}-gamma{args.gamma:g}"
    if args.precision != "fp32":
        tag += f"-{args.precision}"
    return args.out_dir / tag


def epochs_done(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    done = -1
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            done = max(done, int(json.loads(line)["epoch"]))
        except (ValueError, KeyError, TypeError):
            continue
    return done + 1


def planned_epochs(key: RunKey, args: Any) -> int:
    return {"crt": args.crt_epochs, "lws": args.crt_epochs, "tau_norm": 1}.get(key.method, args.epochs)


def wall_history(root: Path, args: Any) -> dict[str, list[float]]:
    """Seconds per epoch per training image of earlier invocations, by method."""
    history: dict[str, list[float]] = {}
    if not root.is_dir():
        return history
    for path in root.glob("*/wall.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            epochs = entry.get("epochs_after", 0) - entry.get("epochs_before", 0)
            if entry.get("returncode") == 0 and epochs > 0 and entry.get("train_images"):
                history.setdefault(entry["method"], []).append(entry["wall_s"] / epochs / entry["train_images"])
    return history


def estimate_seconds(key: RunKey, remaining_epochs: int, history: dict[str, list[float]], args: Any) -> float | None:
    """Wall seconds a run still needs, from the history of its method (or of all, scaled)."""
    images = train_images(key.ratio, args.n_max, args.quick)
    if history.get(key.method):
        per = statistics.median(history[key.method])
    else:
        normalised = [v / COST_UNITS.get(m, 1.0) for m, values in history.items() for v in values]
        if not normalised:
            return None
        per = statistics.median(normalised) * COST_UNITS.get(key.method, 1.0)
    return per * images * remaining_epochs


def grid(args: Any) -> list[RunKey]:
    """Runs in the order that fills a useful table early: seed 0 of every (IR, order) first."""
    keys = []
    for seed in args.seeds:
        for ratio in args.ratios:
            for order in args.orders:
                keys += [RunKey(m, ratio, seed, order) for m in METHODS if m in args.methods]
    return keys


def claim(lock: Path) -> str | None:
    """Take the lock of one run for this process; None when taken, else who holds it.

    Two invocations on one runs folder (say, two shells with overlapping ``--methods``) would
    otherwise train the same run into the same folder. The lock file holds ``host pid``; one left
    by a process that is gone on this host is taken over, one from another host is respected.
    """
    import socket

    lock.parent.mkdir(parents=True, exist_ok=True)
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = lock.read_text(encoding="utf-8").strip() if lock.is_file() else ""
            host, _, pid = holder.partition(" ")
            if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                lock.unlink(missing_ok=True)  # its process is gone: the run is free
                continue
            return holder or "an unknown process"
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(me + "\n")
        return None
    return "a process that keeps re-taking it"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_one(key: RunKey, args: Any, root: Path, deadline: float | None) -> str:
    """Train (or resume) one run; returns what happened, in a word or two."""
    run_dir = root / key.name
    if (run_dir / "results.json").is_file():
        return "done before"
    lock = root / ".locks" / f"{key.name}.lock"
    holder = claim(lock)
    if holder is not None:
        return (f"skipped: another invocation is training it ({holder}); if none is, delete {lock}")
    try:
        return _run_claimed(key, args, root, deadline)
    finally:
        lock.unlink(missing_ok=True)


def _run_claimed(key: RunKey, args: Any, root: Path, deadline: float | None) -> str:
    run_dir = root / key.name
    if (run_dir / "results.json").is_file():  # finished by another invocation before the lock was taken
        return "done before"
    stage1_dir = None
    if key.method in STAGE1_OF:
        stage1_dir = root / RunKey(STAGE1_OF[key.method], key.ratio, key.seed, key.order).name
        if not (stage1_dir / "results.json").is_file() or not (stage1_dir / "last.pt").is_file():
            return f"waits for {stage1_dir.name}"
    before = epochs_done(run_dir)
    resume = (run_dir / "last.pt").is_file() and (run_dir / "config.yaml").is_file()
    remaining = max(planned_epochs(key, args) - (before if resume else 0), 1)
    estimate = estimate_seconds(key, remaining, wall_history(root, args), args)
    if deadline is not None and estimate is not None and time.time() + SAFETY * estimate > deadline:
        return f"not started: needs ~{estimate / 60:.0f} min, {max(0.0, deadline - time.time()) / 60:.0f} left"
    cmd = [sys.executable, "-m", "lttoolkit", "train", "--quiet"]
    cmd += ["--resume", str(run_dir)] if resume else run_overrides(key, args, run_dir, stage1_dir)
    env = dict(os.environ)
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    if not resume and run_dir.exists():
        # A run that stopped before its first checkpoint cannot be resumed, and lttk train never
        # starts in a folder that holds files: keep the remains aside and start again.
        aside = root / ".failed" / f"{key.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        run_dir.rename(aside)
    eta = f", ~{estimate / 60:.1f} min" if estimate is not None else ""
    _common.print_note(f"[{time.strftime('%H:%M:%S')}] {'resume' if resume else 'start'} {key.name} "
                       f"({remaining} epoch(s){eta})")
    # The log is written beside the run folder while it runs (lttk train creates the folder
    # itself and refuses one that already holds files), then appended to its train.log.
    pending_log = root / ".logs" / f"{key.name}.log"
    pending_log.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with open(pending_log, "w", encoding="utf-8") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=_common.REPO_ROOT)
    wall = time.time() - started
    if run_dir.is_dir():
        with open(run_dir / "train.log", "a", encoding="utf-8") as log:
            log.write(pending_log.read_text(encoding="utf-8"))
        pending_log.unlink()
    after = epochs_done(run_dir)
    if key.method == "tau_norm" and proc.returncode == 0:
        before, after = 0, 1
    entry = {"method": key.method, "started": started, "wall_s": round(wall, 2), "epochs_before": before,
             "epochs_after": after, "returncode": proc.returncode,
             "train_images": train_images(key.ratio, args.n_max, args.quick), "threads": args.threads}
    if run_dir.is_dir():
        with open(run_dir / "wall.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
    if proc.returncode != 0:
        where = run_dir / "train.log" if run_dir.is_dir() else pending_log
        _common.print_note(f"  {key.name} FAILED (exit {proc.returncode}); see {where}")
        return f"failed (exit {proc.returncode})"
    if not args.keep_checkpoints:
        (run_dir / "best.pt").unlink(missing_ok=True)  # selected on validation; never reported here
        if key.method not in KEEP_LAST:
            (run_dir / "last.pt").unlink(missing_ok=True)
    top1 = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))["test"]["top1"]
    _common.print_note(f"  {key.name}: test top-1 {top1:.2f} (last epoch) in {wall / 60:.1f} min")
    return "trained"


# --------------------------------------------------------------------------- collecting results
def _rank_groups(counts: Sequence[int]) -> dict[str, list[int]]:
    """Head / middle / tail by training count: 3 / 4 / 3 of 10 classes (30% / 40% / 30%).

    >>> _rank_groups([5, 50, 500, 1, 2, 3, 4, 6, 7, 8])
    {'head': [2, 1, 9], 'middle': [8, 7, 0, 6], 'tail': [5, 4, 3]}
    """
    order = sorted(range(len(counts)), key=lambda i: (-counts[i], i))
    k = max(1, round(0.3 * len(counts)))
    return {"head": order[:k], "middle": order[k:len(order) - k], "tail": order[len(order) - k:]}


def run_precision(config: dict[str, Any], results: dict[str, Any]) -> str:
    """``fp32``, ``bf16`` or ``fp16``: what a finished run trained in.

    Runs record it in ``results.json`` (``precision``, the trainer's log line); older runs are
    read from their config, where ``amp: auto`` is float32 because the grid has only run on CPUs.

    >>> run_precision({}, {"precision": "bfloat16 autocast, channels_last"})
    'bf16'
    >>> run_precision({"train": {"amp": "auto"}}, {}), run_precision({"train": {"amp": True}}, {})
    ('fp32', 'bf16')
    """
    if "precision" in results:
        text = results["precision"]
        return "bf16" if "bfloat16" in text else "fp16" if "float16" in text else "fp32"
    train = config.get("train", {})
    if train.get("amp") is True:
        return "fp16" if train.get("amp_dtype") == "float16" else "bf16"
    return "fp32"


def load_runs(root: Path) -> list[dict[str, Any]]:
    """Every finished run under ``root`` with its key, test metrics and per-class accuracy."""
    import yaml

    runs = []
    for path in sorted(root.glob("*/results.json")):
        results = json.loads(path.read_text(encoding="utf-8"))
        config = yaml.safe_load((path.parent / "config.yaml").read_text(encoding="utf-8"))
        test, counts = results["test"], results["train_class_counts"]
        per_class = test.get("per_class_accuracy") or []
        row: dict[str, Any] = {
            "run": path.parent.name, "method": results["method"], "imbalance_ratio": config["data"]["imbalance_ratio"],
            "seed": results["seed"], "order": "permuted" if config["data"]["permute_classes"] else "natural",
            "epochs": results["epochs"], "train_class_counts": counts, "per_class_accuracy": per_class,
            "precision": run_precision(config, results),
            **{m: test.get(m) for m in ("top1", "many_shot", "medium_shot", "few_shot")},
        }
        for group, members in _rank_groups(counts).items():
            values = [per_class[i] for i in members if i < len(per_class) and per_class[i] is not None]
            row[group] = sum(values) / len(values) if values else None
        if "calibration" in results:
            row["tau"] = results["calibration"]["tau"]
        wall = path.parent / "wall.jsonl"
        if wall.is_file():
            row["wall_s"] = sum(json.loads(l)["wall_s"] for l in wall.read_text(encoding="utf-8").splitlines() if l)
        runs.append(row)
    return runs


def mean_std(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (None for n < 2) of the values that exist.

    >>> mean_std([70.0, 72.0, None])
    {'mean': 71.0, 'std': 1.4142135623730951, 'n': 2}
    """
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(present), "std": statistics.stdev(present) if len(present) > 1 else None,
            "n": len(present)}


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, IR, order): mean and std over the finished seeds."""
    cells: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    for run in runs:
        cells.setdefault((run["method"], run["imbalance_ratio"], run["order"]), []).append(run)
    rows = []
    for (method, ratio, order), members in cells.items():
        row: dict[str, Any] = {"method": method, "imbalance_ratio": ratio, "order": order, "n": len(members),
                               "seeds": sorted(r["seed"] for r in members)}
        for metric in METRICS:
            stats = mean_std(r[metric] for r in members)
            row[f"{metric}_mean"], row[f"{metric}_std"] = stats["mean"], stats["std"]
        rows.append(row)
    rank = {m: i for i, m in enumerate(REPORT_ORDER)}
    return sorted(rows, key=lambda r: (-r["imbalance_ratio"], ORDERS.index(r["order"]), rank.get(r["method"], 99)))


def permutation_test(a: dict[str, list[float]], b: dict[str, list[float]]) -> dict[str, Any]:
    """Exact two-sided permutation test of ``a`` against ``b``, labels permuted within each stratum.

    ``a`` and ``b`` map a stratum (a class order) to that method's values in it; only strata
    both have are used. The statistic is the mean over those strata of ``mean(a_s) − mean(b_s)``
    (each order counts the same, however many seeds it has so far). Every split of each
    stratum's pooled values into the two sizes is enumerated (20 × 20 for 3 against 3 seeds in
    two orders), so ``p`` is exact; ``p_min`` is the smallest p these sizes can give at all (no
    gap is significant at a level below it). Beyond ``EXACT_SPLITS`` splits (many seeds) the
    splits are sampled instead (``MONTE_CARLO_DRAWS``, fixed seed; ``p = (hits + 1) / (draws + 1)``).

    >>> permutation_test({"natural": [1.0, 2.0]}, {"natural": [3.0, 4.0]})
    {'diff': -2.0, 'p': 0.3333333333333333, 'p_min': 0.3333333333333333, 'n_a': 2, 'n_b': 2}
    """
    strata = [s for s in a if s in b and a[s] and b[s]]
    n_a, n_b = sum(len(a[s]) for s in strata), sum(len(b[s]) for s in strata)
    if not strata:
        return {"diff": None, "p": None, "p_min": None, "n_a": 0, "n_b": 0}

    def gap(values: Sequence[float], chosen: Sequence[int], size_a: int) -> float:
        # A stratum's share of the statistic: its difference of means, over the number of strata.
        in_a = sum(values[i] for i in chosen)
        return (in_a / size_a - (sum(values) - in_a) / (len(values) - size_a)) / len(strata)

    observed = sum(gap(a[s] + b[s], range(len(a[s])), len(a[s])) for s in strata)
    splits = math.prod(math.comb(len(a[s]) + len(b[s]), len(a[s])) for s in strata)
    if splits > EXACT_SPLITS:
        # Too many splits to enumerate (many seeds): a Monte Carlo test with a fixed seed instead.
        rng = random.Random(0)
        draws = []
        for _ in range(MONTE_CARLO_DRAWS):
            total = 0.0
            for s in strata:
                pooled, size_a = a[s] + b[s], len(a[s])
                total += gap(pooled, rng.sample(range(len(pooled)), size_a), size_a)
            draws.append(abs(total))
        tol = 1e-9 * max(1.0, abs(observed))
        hits = sum(v >= abs(observed) - tol for v in draws)
        return {"diff": observed, "p": (hits + 1) / (MONTE_CARLO_DRAWS + 1), "p_min": 1 / (MONTE_CARLO_DRAWS + 1),
                "n_a": n_a, "n_b": n_b}
    statistics_ = [0.0]  # the statistic of every split of all strata, built one stratum at a time
    for s in strata:
        pooled, size_a = a[s] + b[s], len(a[s])
        shares = [gap(pooled, chosen, size_a) for chosen in combinations(range(len(pooled)), size_a)]
        statistics_ = [x + y for x in statistics_ for y in shares]
    values = [abs(v) for v in statistics_]
    largest = max(values)
    tol = 1e-9 * max(1.0, largest)
    return {"diff": observed, "p": sum(v >= abs(observed) - tol for v in values) / len(values),
            "p_min": sum(v >= largest - tol for v in values) / len(values), "n_a": n_a, "n_b": n_b}


def against(runs: list[dict[str, Any]], method: str = "bbn",
            metrics: Sequence[str] = ("top1", "few_shot")) -> list[dict[str, Any]]:
    """``method`` against every other method at the largest IR: both orders pooled, tested within each.

    The differences are :func:`permutation_test`'s: the mean over the class orders both methods
    have of the difference of their means in that order.
    """
    if not runs:
        return []
    ratio = max(r["imbalance_ratio"] for r in runs)
    values: dict[tuple[str, str, str], list[float]] = {}
    for run in runs:
        if run["imbalance_ratio"] == ratio:
            for metric in metrics:
                if run[metric] is not None:
                    values.setdefault((run["method"], metric, run["order"]), []).append(run[metric])
    others = [m for m in REPORT_ORDER if m != method and any(k[0] == m for k in values)]
    rows = []
    for other in others:
        row: dict[str, Any] = {"method": method, "against": other, "imbalance_ratio": ratio}
        for metric in metrics:
            test = permutation_test({o: values.get((method, metric, o), []) for o in ORDERS},
                                    {o: values.get((other, metric, o), []) for o in ORDERS})
            row.update({f"{metric}_{k}": v for k, v in test.items()})
        rows.append(row)
    return rows


def cell(row: dict[str, Any] | None, metric: str, with_n: bool = False, *, digits: int = 2, n_label: str = "n=") -> str:
    """``mean ± std`` of one metric of a row (``–`` where it has none), with the seed count if asked."""
    if row is None or row.get(f"{metric}_mean") is None:
        return "–"
    text = f"{row[f'{metric}_mean']:.{digits}f}"
    if row.get(f"{metric}_std") is not None:
        text += f" ± {row[f'{metric}_std']:.{digits}f}"
    return text + (f" ({n_label}{row['n']})" if with_n else "")


# --------------------------------------------------------------------------- faithfulness checks
def _epoch_log(run_dir: Path) -> list[dict[str, Any]]:
    """A finished run's ``metrics.jsonl``, one record per epoch, in epoch order."""
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return sorted((json.loads(line) for line in lines if line.strip()), key=lambda record: record["epoch"])


def faithfulness(runs: list[dict[str, Any]], root: Path) -> dict[str, Any]:
    """Checks that our BBN is the paper's: the alpha it used, what its re-balancing
    sampler draws, and its classifier weight norms against CE / RS / RW."""
    import torch

    from lttoolkit.registry import SAMPLERS
    from lttoolkit.schedules import ParabolicDecay

    checks: dict[str, Any] = {"alpha": [], "reversed_sampler": [], "weight_norms": [], "training_loss": []}
    parabolic = ParabolicDecay()
    # Training loss per epoch of ce and bbn, mean over seeds: where BBN trails CE, this shows
    # whether it learned slowly or diverged (a jump right after warm-up).
    curves: dict[tuple[float, str, str], list[list[float]]] = {}
    for run in runs:
        if run["method"] in ("ce", "bbn"):
            curves.setdefault((run["imbalance_ratio"], run["order"], run["method"]), []).append(
                [r["loss"] for r in _epoch_log(root / run["run"])])
    for (ratio, order, method), losses in sorted(curves.items(), key=lambda c: (-c[0][0], c[0][1], c[0][2] != "ce")):
        length = min(len(curve) for curve in losses)
        checks["training_loss"].append({"imbalance_ratio": ratio, "order": order, "method": method, "n": len(losses),
                                        "loss_per_epoch": [statistics.fmean(c[e] for c in losses)
                                                           for e in range(length)]})
    for run in runs:
        if run["method"] != "bbn":
            continue
        alphas = [(r["epoch"], r["alpha"]) for r in _epoch_log(root / run["run"]) if "alpha" in r]
        error = max((abs(a - parabolic(e, run["epochs"])) for e, a in alphas), default=None)
        checks["alpha"].append({"run": run["run"], "epochs": run["epochs"], "alpha_per_epoch": [a for _, a in alphas],
                                "max_abs_diff_from_1_minus_(T/Tmax)^2": error})
    seen = set()
    for run in runs:
        counts = tuple(run["train_class_counts"])
        if run["method"] != "bbn" or counts in seen:
            continue
        seen.add(counts)
        labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
        sampler = SAMPLERS.build("reversed", labels=labels.tolist(), seed=0)
        drawn = torch.bincount(labels[sampler.indices()], minlength=len(counts)).double()
        inverse = 1.0 / torch.tensor(counts, dtype=torch.float64)
        expected = inverse / inverse.sum()  # BBN: P_i = w_i / sum_j w_j with w_i = N_max / N_i
        observed = drawn / drawn.sum()
        checks["reversed_sampler"].append({
            "train_class_counts": list(counts), "draws": int(drawn.sum()),
            "expected_fraction": [round(v, 4) for v in expected.tolist()],
            "observed_fraction": [round(v, 4) for v in observed.tolist()],
            "max_abs_diff": float((observed - expected).abs().max())})
    from lttoolkit.engine.analysis import analyze_checkpoint

    for run in runs:
        checkpoint = root / run["run"] / "last.pt"
        if run["method"] in KEEP_LAST and checkpoint.is_file() and run["seed"] == min(r["seed"] for r in runs):
            try:
                analysis = analyze_checkpoint(checkpoint)
            except Exception as exc:  # noqa: BLE001 - an analysis must never stop the report
                analysis = {"error": f"{type(exc).__name__}: {exc}"}
            checks["weight_norms"].append({"run": run["run"], "method": run["method"],
                                           "imbalance_ratio": run["imbalance_ratio"], "order": run["order"],
                                           **{k: analysis.get(k) for k in ("train_class_counts", "weight_norms",
                                                                            "error") if k in analysis}})
    return checks


# --------------------------------------------------------------------------- the report
README_START = "<!-- reproduce-converged-table: made by benchmarks/reproduce.py, do not edit -->"
README_END = "<!-- /reproduce-converged-table -->"


def readme_table(rows: list[dict[str, Any]]) -> str:
    """The README's table: top-1 and few-shot at the largest IR, both orders, one decimal, n seeds.

    >>> row = {"method": "ce", "imbalance_ratio": 100.0, "order": "natural", "n": 2,
    ...        "top1_mean": 76.42, "top1_std": 3.6, "few_shot_mean": 61.3, "few_shot_std": 14.7}
    >>> print(readme_table([row]).splitlines()[-1])
    | ce | 76.4 ± 3.6 (2) | 61.3 ± 14.7 | – | – |
    """
    if not rows:
        return ""
    ratio = max(r["imbalance_ratio"] for r in rows)
    by = {(r["method"], r["order"]): r for r in rows if r["imbalance_ratio"] == ratio}
    methods = [m for m in REPORT_ORDER if any(k[0] == m for k in by)]

    def short(row: dict[str, Any] | None, metric: str, with_n: bool) -> str:
        return cell(row, metric, with_n, digits=1, n_label="")

    lines = [f"| method (IR {ratio:g}) | top-1, natural (seeds) | few-shot, natural | top-1, permuted (seeds) "
             "| few-shot, permuted |", "|---|---|---|---|---|"]
    for method in methods:
        nat, perm = by.get((method, "natural")), by.get((method, "permuted"))
        lines.append(f"| {method} | {short(nat, 'top1', True)} | {short(nat, 'few_shot', False)} | "
                     f"{short(perm, 'top1', True)} | {short(perm, 'few_shot', False)} |")
    return "\n".join(lines)


def comparison_table(comparisons: Sequence[dict[str, Any]]) -> list[str]:
    """The report's lines for :func:`against`'s rows (none without rows)."""
    if not comparisons:
        return []
    first = comparisons[0]

    def number(value: float | None, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    floor = min((c["top1_p_min"] for c in comparisons if c["top1_p_min"] is not None), default=None)
    lines = ["", f"{first['method']} against each method at IR {first['imbalance_ratio']:g}, both class orders pooled: "
                 f"difference of the means ({first['method']} − method, points, the mean over the class orders "
                 "both have of the difference in that order) and the p of an exact two-sided "
                 "permutation test that permutes the method labels within each class order (3 seeds in each of "
                 "two orders give 400 splits, so p can go down to 0.005; the last column is the floor for the "
                 f"runs finished, {number(floor, '.3g')} at best).", "",
             "| against | runs | Δ top-1 | p | Δ few-shot | p | smallest p possible |",
             "|---|---|---|---|---|---|---|"]
    for c in comparisons:
        lines.append(f"| {c['against']} | {c['top1_n_a']} / {c['top1_n_b']} | {number(c['top1_diff'], '+.2f')} | "
                     f"{number(c['top1_p'], '.3f')} | {number(c['few_shot_diff'], '+.2f')} | "
                     f"{number(c['few_shot_p'], '.3f')} | {number(c['top1_p_min'], '.3f')} |")
    return lines


def markdown(rows: list[dict[str, Any]], checks: dict[str, Any], settings: dict[str, Any],
             comparisons: Sequence[dict[str, Any]] = ()) -> str:
    by = {(r["method"], r["imbalance_ratio"], r["order"]): r for r in rows}
    methods = [m for m in REPORT_ORDER if any(k[0] == m for k in by)]
    ratios = sorted({k[1] for k in by}, reverse=True)
    columns = [(ir, order) for ir in ratios for order in ORDERS if any(k[1:] == (ir, order) for k in by)]
    if not rows:
        return (f"Budget: {settings['budget']}.\n\nNo run of this budget has finished yet "
                f"(runs folder: `{settings['runs_dir']}`).\n")
    lines = [f"Budget: {settings['budget']}.", "",
             "The README's table (test accuracy at the last epoch, %, mean ± std over the seeds finished):", "",
             README_START, readme_table(rows), README_END, "",
             "Test top-1 (%) at the last epoch, mean ± std over seeds (n = seeds finished):", "",
             "| method | " + " | ".join(f"IR {ir:g}, {order} order" for ir, order in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for method in methods:
        lines.append(f"| {method} | " + " | ".join(cell(by.get((method, ir, o)), "top1", True) for ir, o in columns)
                     + " |")
    if "ce" in methods and "bbn" in methods:
        diffs = []
        for ir, order in columns:
            ce, bbn = by.get(("ce", ir, order)), by.get(("bbn", ir, order))
            diffs.append(f"{bbn['top1_mean'] - ce['top1_mean']:+.2f}" if ce and bbn else "–")
        lines.append("| *bbn − ce* | " + " | ".join(diffs) + " |")
    for ir, order in columns:
        lines += ["", f"IR {ir:g}, {order} class order: mean ± std over seeds (%). many / medium / few: more than "
                      f"100, 20–100, fewer than 20 training images (– where no class falls in the group); head 3 / "
                      f"middle 4 / tail 3: classes ranked by training count.", "",
                  "| method | n | " + " | ".join(METRIC_LABELS[m] for m in METRICS) + " |",
                  "|---|---|" + "---|" * len(METRICS)]
        for method in methods:
            row = by.get((method, ir, order))
            if row is not None:
                lines.append(f"| {method} | {row['n']} | " + " | ".join(cell(row, m) for m in METRICS) + " |")
    lines += comparison_table(comparisons)
    if checks.get("alpha"):
        worst = max((c["max_abs_diff_from_1_minus_(T/Tmax)^2"] or 0.0) for c in checks["alpha"])
        lines += ["", f"BBN faithfulness: the alpha logged in every epoch of {len(checks['alpha'])} BBN run(s) "
                      f"differs from 1 − (T/T_max)² by at most {worst:.2g}."]
    curves = checks.get("training_loss", [])
    if curves:
        length = max(len(c["loss_per_epoch"]) for c in curves)
        lines += ["", "Training loss per epoch, mean over seeds. BBN's is α·L(z, y_c) + (1−α)·L(z, y_r) on the mixed "
                      "logits: while α ≈ 1 (the first epochs) it is CE's loss on the conventional batch and compares "
                      "directly; later one logit vector serves two labels, so it cannot fall below the entropy of α "
                      "(0.69 nats at α = 0.5).", "",
                  "| cell | method | n | " + " | ".join(str(e) for e in range(length)) + " |",
                  "|---|---|---|" + "---|" * length]
        for c in curves:
            values = [f"{v:.2f}" for v in c["loss_per_epoch"]] + ["–"] * (length - len(c["loss_per_epoch"]))
            lines.append(f"| IR {c['imbalance_ratio']:g}, {c['order']} | {c['method']} | {c['n']} | "
                         + " | ".join(values) + " |")
        lines.append("")
    for check in checks.get("reversed_sampler", []):
        lines.append(f"Reversed sampler on counts {check['train_class_counts']}: class fractions of one epoch "
                     f"({check['draws']:,} draws) differ from (1/N_i)/Σ(1/N_j) by at most "
                     f"{check['max_abs_diff']:.4f}.")
    return "\n".join(lines) + "\n"


def plots(runs: list[dict[str, Any]], checks: dict[str, Any], out_dir: Path) -> list[str]:
    """Per-class accuracy against training count, the alpha schedules, weight norms (if matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _common.print_note("matplotlib is not installed: no plots")
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    cells = sorted({(r["imbalance_ratio"], r["order"]) for r in runs}, key=lambda c: (-c[0], c[1]))
    for ratio, order in cells:
        members = [r for r in runs if (r["imbalance_ratio"], r["order"]) == (ratio, order) and r["per_class_accuracy"]]
        # Two panels, CE (black) and BBN (red) drawn bold in both.
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
        palette = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive")
        for ax, (title, family) in zip(axes, PLOT_PANELS):
            for method in (m for m in REPORT_ORDER if m in ("ce", "bbn", *family)):
                points: dict[int, list[float]] = {}
                for run in (r for r in members if r["method"] == method):
                    for count, acc in zip(run["train_class_counts"], run["per_class_accuracy"]):
                        if acc is not None:
                            points.setdefault(count, []).append(acc)
                if not points:
                    continue
                xs = sorted(points, reverse=True)
                ax.plot(xs, [statistics.fmean(points[x]) for x in xs], marker="o", ms=3,
                        lw=2.4 if method in ("bbn", "ce") else 1.1, label=method,
                        color={"ce": "black", "bbn": "tab:red"}.get(method) or palette[family.index(method)])
            ax.set_xscale("log")
            ax.invert_xaxis()
            ax.set_xlabel("training images of the class (log scale, head → tail)")
            ax.set_title(title, fontsize=10)
            if ax.get_lines():
                ax.legend(fontsize=7, ncol=2)
        axes[0].set_ylabel("test accuracy of the class (%), mean over seeds")
        fig.suptitle(f"Fashion-MNIST-LT, IR {ratio:g}, {order} class order")
        fig.tight_layout()
        path = out_dir / f"per_class_ir{ratio:g}_{order}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    from lttoolkit.schedules import CosineDecay, LinearDecay, ParabolicDecay, ParabolicIncrement, StepDecay

    epochs = max((c["epochs"] for c in checks.get("alpha", [])), default=30)
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, schedule in (("parabolic decay (BBN)", ParabolicDecay()), ("linear", LinearDecay()),
                            ("cosine", CosineDecay()), ("parabolic increment", ParabolicIncrement()),
                            ("step at 80%", StepDecay())):
        ax.plot(range(epochs), [schedule(t, epochs) for t in range(epochs)], label=label)
    for check in checks.get("alpha", [])[:1]:
        ax.plot(range(len(check["alpha_per_epoch"])), check["alpha_per_epoch"], "kx", label=f"logged: {check['run']}")
    ax.set_xlabel(f"epoch T (of {epochs})")
    ax.set_ylabel("alpha (weight of the conventional branch)")
    ax.set_title("cumulative-learning alpha schedules")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "alpha_schedules.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(str(path))
    norms = [c for c in checks.get("weight_norms", []) if c.get("weight_norms")]
    for ratio, order in sorted({(c["imbalance_ratio"], c["order"]) for c in norms}, key=lambda c: (-c[0], c[1])):
        fig, ax = plt.subplots(figsize=(7, 4))
        for check in (c for c in norms if (c["imbalance_ratio"], c["order"]) == (ratio, order)):
            counts = check["train_class_counts"]
            rank = sorted(range(len(counts)), key=lambda i: -counts[i])
            for part, values in check["weight_norms"].items():
                if check["method"] == "bbn" or part == "both":
                    label = check["method"] if part == "both" else f"bbn {part}"
                    if check["method"] == "bbn" and part == "both":
                        label = "bbn W"
                    ax.plot(range(len(rank)), [values[i] for i in rank], marker="o", ms=3, label=label)
        ax.set_xlabel("class, sorted by training images (head → tail)")
        ax.set_ylabel("L2 norm of the class's classifier weights")
        ax.set_title(f"classifier weight norms (BBN Fig. 5), IR {ratio:g}, {order}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"weight_norms_ir{ratio:g}_{order}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    return written


def write_report(args: Any, root: Path, report: _common.Report, statuses: dict[str, str]) -> Path:
    runs = load_runs(root)
    # A run of another precision in this folder is reported and left out of every table.
    excluded = [r for r in runs if r["precision"] != args.precision]
    runs = [r for r in runs if r["precision"] == args.precision]
    for r in excluded:
        _common.print_note(f"left out {r['run']}: it trained in {r['precision']}, this grid is {args.precision}")
    report.data["excluded_runs"] = [{"run": r["run"], "precision": r["precision"]} for r in excluded]
    rows = aggregate(runs)
    checks = faithfulness(runs, root)
    comparisons = against(runs, "bbn")
    report.results.extend(rows)
    report.data["runs"] = [{k: v for k, v in r.items()} for r in runs]
    report.data["faithfulness"] = checks
    report.data["bbn_against"] = comparisons
    report.data["this_invocation"] = statuses
    md_path = report.path.with_suffix(".md")
    default_plots = (report.path.with_suffix("") if args.quick or args.out is not None
                     else _common.REPO_ROOT / "docs" / "assets" / "reproduce")
    plot_dir = args.plots_dir or default_plots
    report.data["markdown"] = str(md_path)
    report.data["plots"] = plots(runs, checks, plot_dir) if runs else []
    md_path.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, checks, report.settings, comparisons)
    if excluded:
        text += ("\nLeft out of every table (another precision than this grid's " + args.precision + "): "
                 + ", ".join(f"{r['run']} ({r['precision']})" for r in excluded) + ".\n")
    md_path.write_text(text, encoding="utf-8")
    columns = ["method", "IR", "order", "n", *(METRIC_LABELS[m] for m in METRICS)]
    _common.print_table(f"{NAME}: test accuracy at the last epoch, mean ± std over seeds (runs in {root})", columns,
                        [(r["method"], f"{r['imbalance_ratio']:g}", r["order"], str(r["n"]),
                          *(cell(r, m) for m in METRICS)) for r in rows], plain=args.plain)
    _common.print_note(f"wrote {md_path}" + (f" and {len(report.data['plots'])} plot(s) in {plot_dir}"
                                             if report.data["plots"] else ""))
    return report.write()


# --------------------------------------------------------------------------- main
def _csv(kind: type, allowed: Sequence[Any] | None = None):
    def parse(text: str) -> list[Any]:
        values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        bad = [v for v in values if allowed is not None and v not in allowed]
        if bad or not values:
            raise ValueError(f"{bad or text!r}: choose from {', '.join(map(str, allowed or []))}")
        return values
    parse.__name__ = f"comma-separated {kind.__name__}"
    return parse


def parse_args(argv: list[str] | None = None) -> Any:
    parser = _common.base_parser(NAME, DESCRIPTION, threads=False)
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS of each training process (default: inherited); 1 is steadier on a "
                             "loaded machine")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where run folders accumulate (default: benchmarks/results/reproduce/runs; --quick: a "
                             "temporary folder); runs of one budget go to <out-dir>/epochs<E>-nmax<N>/")
    parser.add_argument("--plots-dir", type=Path, default=None,
                        help="where the plots go (default: docs/assets/reproduce, which docs/benchmarks.md shows; "
                             "with --quick or --out: the report path without .json)")
    parser.add_argument("--epochs", type=int, default=30, help="stage-1 epochs (default 30; BBN's CIFAR recipe: 200)")
    parser.add_argument("--n-max", type=int, default=6000, help="training images of the head class before the "
                        "10%% validation hold-out (default 6000, all Fashion-MNIST has)")
    parser.add_argument("--crt-epochs", type=int, default=None, help="cRT epochs (default max(2, round(E*10/90)))")
    parser.add_argument("--eval-every", type=int, default=5, help="test/validation every N epochs and the last "
                        "(default 5; evaluation of the 10,000 test images costs about a fifth of a ce epoch)")
    parser.add_argument("--warmup-epochs", type=int, default=2, help="linear lr warm-up epochs (default 2; the "
                        "converged protocol and BBN's recipe: 5)")
    parser.add_argument("--gamma", type=float, default=0.1, help="lr factor at each milestone (default 0.1; BBN's "
                        "CIFAR recipe and the converged protocol: 0.01)")
    parser.add_argument("--methods", type=_csv(str, METHODS), default=list(SHORT_METHODS),
                        help=f"comma-separated, from {', '.join(METHODS)} (default: the first grid's nine)")
    parser.add_argument("--seeds", type=_csv(int), default=[0, 1, 2])
    parser.add_argument("--ratios", type=_csv(float), default=[100.0, 10.0])
    parser.add_argument("--orders", type=_csv(str, ORDERS), default=list(ORDERS))
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="start no run that its estimate says would not finish within this many minutes")
    parser.add_argument("--device", default="auto", help="train.device of the runs (default auto)")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder with the four Fashion-MNIST IDX files (default: /usr/share/datasets/fashion-mnist)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="fp32 (default) or bf16: autocast to bfloat16 with channels_last (train.amp_dtype); "
                             "its runs go to a folder of their own (suffix -bf16)")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep best.pt of every run and last.pt of every method (default: last.pt of ce, rs, "
                             "rw and bbn only, which stage 2 and the weight-norm figure use)")
    parser.add_argument("--report", action="store_true", help="only collect the finished runs into the report")
    args = parser.parse_args(argv)
    if args.quick:
        # The smoke run trains the headline methods, and ride when asked for (--methods ride).
        args.methods = [m for m in args.methods if m in ("ce", "bbn", "tau_norm", "ride")] or ["ce", "bbn", "tau_norm"]
        args.seeds, args.ratios, args.orders = args.seeds[:1], [10.0], ["natural"]
        args.epochs, args.n_max, args.eval_every = 1, 60, 1  # the embedded set has 6 images in its smallest class
    if args.crt_epochs is None:
        args.crt_epochs = crt_epochs(args.epochs)
    if args.epochs < 1 or args.crt_epochs < 1:
        parser.error("--epochs and --crt-epochs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    temporary = None
    if args.out_dir is None:
        if args.quick:
            temporary = Path(tempfile.mkdtemp(prefix="lttk-reproduce-"))
            args.out_dir = temporary
        else:
            args.out_dir = _common.RESULTS_DIR / NAME / "runs"
    report = _common.Report(NAME, DESCRIPTION, args)
    root = budget_dir(args)
    budget = (f"{args.epochs} epochs, n_max {args.n_max} (training set = 90% of the long-tailed set; 10% per class "
              f"held out for validation), batch 128, SGD lr 0.1 momentum 0.9 wd 2e-4, warm-up {args.warmup_epochs} "
              f"epochs, lr x{args.gamma:g} at epochs {milestones(args.epochs)}; cRT / LWS {args.crt_epochs} epochs "
              f"(cosine, class-balanced); "
              f"resnet32_cifar, 1 channel; test numbers from the last epoch")
    if args.precision == "bf16":
        budget += "; bfloat16 autocast and channels_last"
    if args.quick:
        budget = "quick smoke run on the embedded data: 1 epoch of 2 steps (numbers mean nothing)"
    report.settings.update({
        "budget": budget, "dataset": "embedded" if args.quick else "fashion_mnist", "epochs": args.epochs,
        "n_max": args.n_max, "crt_epochs": args.crt_epochs, "milestones": milestones(args.epochs), "gamma": args.gamma,
        "warmup_epochs": args.warmup_epochs, "lr": 0.1, "weight_decay": 2e-4, "batch_size": 128, "val_fraction": VAL_FRACTION,
        "eval_every": args.eval_every, "backbone": "resnet32_cifar", "in_chans": 1, "methods": args.methods,
        "seeds": args.seeds, "ratios": args.ratios, "orders": args.orders, "max_minutes": args.max_minutes,
        "threads": args.threads, "runs_dir": str(root), "precision": args.precision,
        "shot_groups": "many > 100, medium 20-100, few < 20 training images (Liu et al. 2019); head/middle/tail: "
                       "the 3 / 4 / 3 classes with most / middle / fewest training images",
    })
    statuses: dict[str, str] = {}
    try:
        if not args.report:
            deadline = time.time() + 60 * args.max_minutes if args.max_minutes else None
            keys = grid(args)
            _common.print_note(f"{len(keys)} run(s) in {root}; budget: {budget}")
            for key in keys:
                statuses[key.name] = run_one(key, args, root, deadline)
                if statuses[key.name] not in ("trained", "done before"):
                    _common.print_note(f"  {key.name}: {statuses[key.name]}")
        write_report(args, root, report, statuses)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    failed = [k for k, v in statuses.items() if v.startswith("failed")]
    return 1 if failed and args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
