"""The prepared GPU check: one short script for a lent GPU, one table at the end.

Runs, each in its own process with a time limit, within about five minutes on one GPU:

1. ``train_speed.py --device cuda --compile``: plain and BBN ``resnet32_cifar`` training
   images/s, fp32 / bf16 / fp16 autocast, NCHW / channels_last, eager / compiled;
2. ``gpu_step.py``: BBN ResNet-50 (two trunk passes) against the plain backbone on the same
   2B images, fp16 and bf16 autocast, channels_last on and off;
3. three epochs of ``lttk train`` (the BBN CIFAR-10-LT paper config) on synthetic
   CIFAR-10-shaped files written to a temporary folder: wall time per epoch and images/s.

Every part writes its JSON report into ``--out-dir`` (default ``benchmarks/results/gpu_check``)
and the summary table goes to stdout and ``gpu_check.json``. Without a CUDA device it says so
and exits 0.

Run: ``python benchmarks/gpu_check.py`` (``--quick`` shrinks every part, for a smoke test on
the CPU with ``--device cpu``).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

NAME = "gpu_check"
DESCRIPTION = "the prepared GPU check: train_speed, gpu_step and 3 epochs of lttk train, one table"


def parse_args(argv: list[str] | None = None) -> Any:
    parser = _common.base_parser(NAME, DESCRIPTION, threads=False)
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu only to check the script")
    parser.add_argument("--out-dir", type=Path, default=None, help="where the parts' reports go")
    parser.add_argument("--budget", type=float, default=280.0, help="seconds for all parts together (default 280)")
    return parser.parse_args(argv)


def write_cifar10(root: Path, per_class: int, test_per_class: int) -> Path:
    """CIFAR-10's python archives with random images (the shape and format, not the data)."""
    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def dump(name: str, labels: list[int]) -> None:
        data = rng.integers(0, 256, (len(labels), 3 * 32 * 32), dtype=np.uint8)
        (folder / name).write_bytes(pickle.dumps({b"labels": labels, b"data": data}, protocol=2))

    labels = [c for c in range(10) for _ in range(per_class)]
    for number in range(1, 6):
        dump(f"data_batch_{number}", labels[number - 1::5])
    dump("test_batch", [c for c in range(10) for _ in range(test_per_class)])
    names = [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                  "truck")]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    return root


def run(cmd: list[str], timeout: float, log: Path) -> dict[str, Any]:
    started = time.time()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 10), cwd=_common.REPO_ROOT)
        status = "ok" if done.returncode == 0 else f"exit {done.returncode}"
        output = done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout or b""
        status = f"timed out after {timeout:.0f} s"
        output = partial.decode(errors="replace") if isinstance(partial, bytes) else partial
    log.write_text(" ".join(cmd) + "\n" + output, encoding="utf-8")
    return {"status": status, "seconds": round(time.time() - started, 1), "log": str(log)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    report = _common.Report(NAME, DESCRIPTION, args)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: skipped (run this script where a GPU is lent)")
        report.data["skipped"] = True
        report.write()
        return 0
    report.data["skipped"] = False
    out_dir = args.out_dir or _common.RESULTS_DIR / NAME
    out_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.budget
    quick = ["--quick"] if args.quick else []
    python = sys.executable
    bench = _common.BENCHMARKS_DIR
    rows: list[tuple[Any, ...]] = []

    def left(share: float) -> float:
        return max(10.0, min(share * args.budget, deadline - time.time()))

    # 1. train_speed
    speed_json = out_dir / "train_speed.json"
    part = run([python, str(bench / "train_speed.py"), "--device", args.device, "--plain", "--out", str(speed_json),
                *(["--compile"] if args.device.startswith("cuda") else []), *quick,
                *([] if args.quick else ["--repeats", "20"])], left(0.4), out_dir / "train_speed.log")
    report.data.setdefault("parts", {})["train_speed"] = part
    if speed_json.is_file():
        for r in json.loads(speed_json.read_text())["results"]:
            rows.append(("train_speed", r["variant"], f"{r['images_per_second']:.0f} img/s",
                         f"x{r['speedup_over_fp32_nchw']:.2f} fp32 nchw"))
    else:
        rows.append(("train_speed", "-", part["status"], part["log"]))

    # 2. gpu_step, fp16 / bf16, channels_last on / off
    for dtype in ("float16", "bfloat16"):
        for cl in ("--channels-last", "--no-channels-last"):
            target = out_dir / f"gpu_step_{dtype}_{cl.strip('-').replace('-', '_')}.json"
            part = run([python, str(bench / "gpu_step.py"), "--device", args.device, "--dtype", dtype, cl, "--plain",
                        "--out", str(target), *quick, *([] if args.quick else ["--repeats", "4"])],
                       left(0.1), out_dir / f"{target.stem}.log")
            report.data["parts"][target.stem] = part
            if target.is_file():
                data = json.loads(target.read_text())
                for r in data.get("results", []):
                    rows.append(("gpu_step", f"resnet50 {dtype} {cl.strip('-')} {r.get('phase', '')}",
                                 f"BBN/plain {r.get('ratio', float('nan')):.3f}", r.get("status", "")))
            else:
                rows.append(("gpu_step", f"{dtype} {cl.strip('-')}", part["status"], part["log"]))

    # 3. three epochs of lttk train on synthetic CIFAR-10-shaped data
    with tempfile.TemporaryDirectory(prefix="lttk-gpu-check-") as tmp:
        root = write_cifar10(Path(tmp) / "data", per_class=50 if args.quick else 5000,
                             test_per_class=5 if args.quick else 1000)
        epochs = 1 if args.quick else 3
        overrides = [f"data.root={root}", f"train.epochs={epochs}", "optim.warmup_epochs=0", "optim.milestones=[2]",
                     f"train.device={args.device}", f"output_dir={tmp}/runs", "name=check", "data.num_workers=4",
                     *(["train.max_steps_per_epoch=2", "data.num_workers=0", "data.imbalance_ratio=10"]
                       if args.quick else [])]
        part = run([python, "-m", "lttoolkit", "train", "examples/configs/bbn_cifar10_lt.yaml", *overrides, "--quiet"],
                   max(10.0, deadline - time.time()), out_dir / "lttk_train.log")
        report.data["parts"]["lttk_train"] = part
        metrics = Path(tmp) / "runs" / "check" / "metrics.jsonl"
        if metrics.is_file():
            for line in metrics.read_text().splitlines():
                record = json.loads(line)
                rows.append(("lttk train", f"epoch {record['epoch']}", f"{record.get('epoch_seconds', 0):.1f} s",
                             f"{record.get('images_per_second', 0):.0f} img/s, loss {record.get('loss', 0):.3f}"))
        else:
            rows.append(("lttk train", "-", part["status"], part["log"]))

    report.data["device_name"] = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    report.results.extend({"part": r[0], "what": r[1], "value": r[2], "note": r[3]} for r in rows)
    _common.print_table(f"GPU check on {report.data['device_name']}", ["part", "what", "value", "note"], rows,
                        plain=args.plain)
    report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
