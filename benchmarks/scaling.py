"""Data-parallel scaling on the CPU: BBN on 1 against 2 processes (torchrun, gloo).

BBN (Zhou et al., CVPR 2020) steps on synthetic images, launched with
``torchrun --standalone --nproc_per_node=N benchmarks/_scaling_worker.py``,
N = 1 and 2, interleaved (1, 2, 1, 2, ...). The cores are split fairly: with C
usable cores each of the N processes gets ``C // N`` torch threads
(``OMP_NUM_THREADS`` and ``torch.set_num_threads``), so both settings use the
same cores. The batch per process is fixed (weak scaling), so a step of N
processes trains on N times the images.

Reported: steps/s, images/s (all processes' images, both branches) and the
scaling efficiency on the same cores, ``images/s(N) / images/s(1)``: 1.0 means
splitting the cores between DDP processes costs nothing against one process
using them all through intra-op threads; below 1 is the price of gradient
all-reduce and process overhead. The timing excludes start-up (it is measured
inside the workers between two barriers); the launch wall time is recorded too.

Run: ``python benchmarks/scaling.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

NAME = "scaling"
DESCRIPTION = "BBN steps/s and images/s with 1 against 2 torchrun processes (gloo) on the same CPU cores"
WORKER = Path(__file__).resolve().parent / "_scaling_worker.py"

FULL = {"backbone": "resnet32_cifar", "batch": 64, "image_size": 32, "steps": 15, "warmup_steps": 3, "repeats": 2}
QUICK = {"backbone": "resnet20_cifar", "batch": 4, "image_size": 32, "steps": 2, "warmup_steps": 1, "repeats": 1}


def parse_args(argv: list[str] | None = None) -> Any:
    parser = _common.base_parser(NAME, DESCRIPTION, threads=False)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    parser.add_argument("--repeats", type=int, default=None, help="launches per process count")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per launch")
    parser.add_argument("--batch", type=int, default=None, help="images per branch per process")
    parser.add_argument("--cores", type=int, default=None, help="cores to split (default: the usable cores)")
    return parser.parse_args(argv)


def launch(nproc: int, threads: int, spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """One torchrun launch; returns rank 0's timing plus the launch wall time."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(WORKER),
           "--out", str(out), "--backbone", spec["backbone"], "--batch", str(spec["batch"]),
           "--image-size", str(spec["image_size"]), "--steps", str(spec["steps"]),
           "--warmup-steps", str(spec["warmup_steps"]), "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"torchrun with {nproc} process(es) failed (exit {proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    result = json.loads(out.read_text())
    result["launch_wall_s"] = wall
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = _common.Report(NAME, DESCRIPTION, args, import_torch=False)
    spec = dict(QUICK if args.quick else FULL)
    for key in ("repeats", "steps", "batch"):
        if getattr(args, key):
            spec[key] = getattr(args, key)
    cores = args.cores or report.data["machine"]["usable_cores"] or 1
    threads = {n: max(1, cores // n) for n in args.processes}
    report.settings.update({**spec, "processes": args.processes, "cores": cores, "threads_per_process": threads,
                            "scaling": "weak (fixed batch per process)",
                            "efficiency": "images/s(N) / images/s(1) on the same cores",
                            "launcher": "python -m torch.distributed.run --standalone --nproc_per_node=N"})
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in args.processes}
    with tempfile.TemporaryDirectory(prefix="lttk-scaling-") as tmp:
        for round_index in range(spec["repeats"]):
            for n in args.processes:
                _common.print_note(f"round {round_index + 1}/{spec['repeats']}: {n} process(es) x "
                                   f"{threads[n]} thread(s), {spec['steps']} steps of {2 * spec['batch']} images "
                                   f"per process ...")
                runs[n].append(launch(n, threads[n], spec, Path(tmp) / f"n{n}-r{round_index}.json"))

    base = None
    for n in args.processes:
        steps_per_s = _common.summary([r["steps_per_s"] for r in runs[n]])["median"]
        images_per_s = _common.summary([r["images_per_s"] for r in runs[n]])["median"]
        if base is None:
            base = images_per_s
        report.results.append({
            "processes": n, "threads_per_process": threads[n], "steps_per_s": steps_per_s,
            "images_per_s": images_per_s, "images_per_step": runs[n][0]["images_per_step"],
            "efficiency": _common.ratio(images_per_s, base) if args.processes[0] == 1 else None,
            "launch_wall_s": _common.summary([r["launch_wall_s"] for r in runs[n]])["median"], "runs": runs[n],
        })
    _common.print_table(f"scaling: BBN {spec['backbone']} on {cores} cores, median of {spec['repeats']} launches",
                        ["processes", "threads each", "steps/s", "images/s", "efficiency", "launch wall s"],
                        [(str(r["processes"]), r["threads_per_process"], r["steps_per_s"], r["images_per_s"],
                          r["efficiency"], r["launch_wall_s"]) for r in report.results], plain=args.plain)
    report.print_targets(plain=args.plain)
    report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
