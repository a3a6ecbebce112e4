"""Shared pieces of the benchmark scripts: the machine description, interleaved timing,
PASS/MISS targets, tables and the JSON report.

Benchmarks are scripts, not tests: they measure, print a table and write JSON; a
target that is missed is reported as ``MISS`` and never fails the run. Ratios are
always measured side by side in one process, the variants interleaved
(A, B, A, B, ...), and reported as the ratio of the medians, so that a change in
machine load during the run hits both variants alike.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
RESULTS_DIR = BENCHMARKS_DIR / "results"

# Keys every report carries (tests/test_benchmarks_smoke.py checks them).
REPORT_KEYS = ("benchmark", "description", "quick", "command", "started_at", "wall_seconds", "machine",
               "settings", "results", "targets")
MACHINE_KEYS = ("cpu_model", "logical_cores", "usable_cores", "torch_version", "timm_version", "torch_threads",
                "gpu", "load_average_start", "load_average_end")


# --------------------------------------------------------------------------- the machine
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(*, import_torch: bool = True) -> dict[str, Any]:
    """Describe the machine a benchmark ran on (load averages are filled in by :class:`Report`)."""
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python_version": platform.python_version(),
        "torch_version": None,
        "timm_version": None,
        "torch_threads": None,
        "gpu": None,
        "git_commit": _git_commit(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
    }
    try:
        from importlib.metadata import version

        info["lttoolkit_version"] = version("lttoolkit")
    except Exception:  # noqa: BLE001 - a description must never stop a benchmark
        info["lttoolkit_version"] = None
    if import_torch:
        import timm
        import torch

        info["torch_version"] = torch.__version__
        info["timm_version"] = timm.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    else:
        from importlib.metadata import PackageNotFoundError, version

        for key, dist in (("torch_version", "torch"), ("timm_version", "timm")):
            try:
                info[key] = version(dist)
            except PackageNotFoundError:
                info[key] = None
    return info


# --------------------------------------------------------------------------- timing
def interleaved(variants: Mapping[str, Callable[[], Any]], repeats: int, *, warmup: int = 1,
                sync: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Time each variant ``repeats`` times, interleaved A, B, A, B, ...

    Args:
        variants: name -> a callable doing one repetition.
        repeats: timed repetitions of each variant.
        warmup: untimed rounds first (allocator, caches, lazy initialisation).
        sync: called after each repetition inside the timed region (e.g.
            ``torch.cuda.synchronize``).

    Returns:
        name -> seconds of each repetition, in order.
    """
    for _ in range(warmup):
        for fn in variants.values():
            fn()
            if sync is not None:
                sync()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            if sync is not None:
                sync()
            times[name].append(time.perf_counter() - start)
    return times


def bbn_train_step(forward: Callable[..., Any], model: Any, optimizer: Any, batches: Sequence[Any],
                   alpha: float = 0.5) -> Callable[[], None]:
    """One BBN training step as a closure, the unit every speed benchmark times.

    ``forward`` is the model or its DDP wrapper; ``batches`` is ``(x_c, x_r, y_c, y_r)``.
    """
    import torch.nn.functional as F

    x_c, x_r, y_c, y_r = batches

    def step() -> None:
        logits = forward(x_c, x_r, alpha=alpha)
        loss = model.combine_loss(F.cross_entropy, logits, (y_c, y_r), alpha=alpha)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def summary(samples: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and quartiles of a list of seconds (plus the raw samples)."""
    ordered = sorted(samples)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {"median": statistics.median(ordered), "min": ordered[0], "max": ordered[-1], "q1": q1, "q3": q3,
            "n": len(ordered), "samples": list(samples)}


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; ``nan`` when the denominator is 0."""
    return numerator / denominator if denominator else math.nan


def compare(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Three estimates of ``a / b`` from interleaved samples of two variants.

    ``ratio_of_medians`` is the headline (targets use it); ``ratio_of_mins`` and
    ``median_of_paired_ratios`` (repetition i of A over repetition i of B, which
    ran next to each other) are more robust when other jobs load the machine:
    noise only ever adds time, and a pair shares the load of its moment.

    >>> compare([2.0, 4.0, 2.2], [1.0, 2.0, 1.0])
    {'ratio_of_medians': 2.2, 'ratio_of_mins': 2.0, 'median_of_paired_ratios': 2.0}
    """
    pairs = [x / y for x, y in zip(a, b) if y]
    return {"ratio_of_medians": ratio(statistics.median(a), statistics.median(b)),
            "ratio_of_mins": ratio(min(a), min(b)),
            "median_of_paired_ratios": statistics.median(pairs) if pairs else math.nan}


# --------------------------------------------------------------------------- targets
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda value, target: value <= target,
    ">=": lambda value, target: value >= target,
    "<": lambda value, target: value < target,
    ">": lambda value, target: value > target,
}


def target(name: str, value: float, comparison: str, goal: float, *, note: str = "") -> dict[str, Any]:
    """A target's verdict, ``PASS`` or ``MISS`` (never an assertion).

    >>> target("ratio", 1.05, "<=", 1.10)["status"]
    'PASS'
    """
    passed = not math.isnan(value) and _OPS[comparison](value, goal)
    return {"name": name, "value": value, "comparison": comparison, "target": goal,
            "status": "PASS" if passed else "MISS", "note": note}


# --------------------------------------------------------------------------- output
def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: floats rounded, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:,.{digits}f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, plain: bool = False) -> None:
    """Print a table with rich (coloured PASS/MISS) or as aligned plain text."""
    cells = [[fmt(c) if not isinstance(c, str) else c for c in row] for row in rows]
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            plain = True
    if plain:
        widths = [max(len(str(col)), *(len(row[i]) for row in cells)) if cells else len(col)
                  for i, col in enumerate(columns)]
        print(f"\n{title}")
        print("  ".join(str(col).ljust(w) for col, w in zip(columns, widths)))
        print("  ".join("-" * w for w in widths))
        for row in cells:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        return
    from rich.markup import escape

    table = Table(title=escape(title), title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(escape(col), justify="left" if i == 0 else "right")
    for row in cells:
        table.add_row(*(f"[green]{c}[/]" if c == "PASS" else f"[red]{c}[/]" if c == "MISS" else escape(c) for c in row))
    # Logs and pipes get a wide table rather than rich's 80-column default with cut cells.
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def print_note(text: str) -> None:
    print(text, flush=True)


def base_parser(name: str, description: str, *, threads: bool = True) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--quick``, ``--out``, ``--plain`` (and ``--threads``)."""
    parser = argparse.ArgumentParser(prog=f"benchmarks/{name}.py", description=description)
    if threads:
        parser.add_argument("--threads", type=int, default=None,
                            help="torch.set_num_threads in the benchmark process (default: torch's own choice)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and few repetitions: a smoke test of the script, not a measurement "
                             "(writes results/<name>.quick.json unless --out is given)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"where to write the JSON report (default: benchmarks/results/{name}.json)")
    parser.add_argument("--plain", action="store_true", help="plain-text tables instead of rich")
    return parser


def apply_threads(args: argparse.Namespace) -> None:
    """Set torch's intra-op threads from ``--threads`` (before anything is timed)."""
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


class Report:
    """Collect a benchmark's settings, results and targets and write them as JSON.

    Args:
        name: the benchmark's name (the script's stem).
        description: one line on what it measures.
        args: the parsed command line (``quick``, ``out``).
        import_torch: describe torch/timm by importing them (False keeps a
            subprocess-only benchmark free of the import).
    """

    def __init__(self, name: str, description: str, args: argparse.Namespace, *, import_torch: bool = True) -> None:
        self.started = time.perf_counter()
        load_start = load_average()
        self.data: dict[str, Any] = {
            "benchmark": name,
            "description": description,
            "quick": bool(args.quick),
            "command": " ".join(["python", f"benchmarks/{name}.py", *sys.argv[1:]]),
            "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "wall_seconds": None,
            "machine": {**machine_info(import_torch=import_torch), "load_average_start": load_start,
                        "load_average_end": None},
            "settings": {},
            "results": [],
            "targets": [],
        }
        default = RESULTS_DIR / (f"{name}.quick.json" if args.quick else f"{name}.json")
        self.path: Path = args.out if args.out is not None else default

    @property
    def settings(self) -> dict[str, Any]:
        return self.data["settings"]

    @property
    def results(self) -> list[Any]:
        return self.data["results"]

    def add_target(self, name: str, value: float, comparison: str, goal: float, *, note: str = "") -> dict[str, Any]:
        entry = target(name, value, comparison, goal, note=note)
        self.data["targets"].append(entry)
        return entry

    def print_targets(self, *, plain: bool = False) -> None:
        if not self.data["targets"]:
            return
        rows = [(t["name"], t["value"], f"{t['comparison']} {t['target']}", t["status"]) for t in self.data["targets"]]
        print_table(f"{self.data['benchmark']}: targets (reported, never asserted)",
                    ["target", "measured", "goal", "status"], rows, plain=plain)

    def write(self) -> Path:
        self.data["wall_seconds"] = round(time.perf_counter() - self.started, 2)
        self.data["machine"]["load_average_end"] = load_average()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(_clean(self.data), indent=2, default=_jsonable, allow_nan=False)
        self.path.write_text(text + "\n", encoding="utf-8")
        load = self.data["machine"]
        print(f"\nload average (1/5/15 min): start {load['load_average_start']}, end {load['load_average_end']} "
              f"on {load['usable_cores']} usable cores; wall {self.data['wall_seconds']} s")
        print(f"wrote {self.path}")
        return self.path


def _clean(value: Any) -> Any:
    # Strict JSON has no NaN/inf: a ratio that could not be computed is written as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
