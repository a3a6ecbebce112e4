"""Train BBN on Fashion-MNIST-LT from Python, the same run as ``lttk train``.

BBN (Zhou et al., "BBN: Bilateral-Branch Network with Cumulative Learning for Long-Tailed
Visual Recognition", CVPR 2020) on a long-tailed Fashion-MNIST: by default the subset that
ships inside lttoolkit (1,485 training images, imbalance ratio 100), with ``--data real`` the
full IDX files of Debian's ``dataset-fashion-mnist`` made long-tailed by
``examples/configs/bbn_fashion_mnist_lt.yaml``.

    python examples/train_bbn_fashion_mnist.py --fast            # seconds: 1 epoch of 2 steps
    python examples/train_bbn_fashion_mnist.py                   # the quick start (~3 CPU minutes)
    python examples/train_bbn_fashion_mnist.py --epochs 4 --set model.schedule=cosine
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Sequence

EXAMPLE_CONFIGS = Path(__file__).resolve().parent / "configs"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true",
                        help="tiny settings: ResNet-20, batch 16, 1 epoch of 2 steps, a temporary run folder")
    parser.add_argument("--data", choices=("embedded", "real"), default="embedded",
                        help="embedded: the subset in the package; real: /usr/share/datasets/fashion-mnist")
    parser.add_argument("--epochs", type=int, help="number of epochs (default: the config's)")
    parser.add_argument("--output-dir", help="parent of the run folder (default: runs, or a temporary folder with --fast)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="any config override, e.g. model.loss.type=focal (repeatable)")
    args = parser.parse_args(argv)

    from lttoolkit.engine import load_config, train
    from lttoolkit.engine.trainer import quickstart_config_path

    config = quickstart_config_path() if args.data == "embedded" else EXAMPLE_CONFIGS / "bbn_fashion_mnist_lt.yaml"
    overrides: list[str] = []
    scratch = None
    if args.fast:
        overrides += ["model.backbone=resnet20_cifar", "data.batch_size=16", "train.max_steps_per_epoch=2",
                      "train.epochs=1", "optim.warmup_epochs=0", "data.num_workers=0"]
        if args.output_dir is None:
            scratch = tempfile.TemporaryDirectory(prefix="lttk-example-")
            args.output_dir = scratch.name
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    if args.output_dir is not None:
        overrides.append(f"output_dir={args.output_dir}")
    overrides += args.overrides
    cfg = load_config(config, overrides)  # validated here: a typo fails before any work
    print(f"config: {config.name} + {overrides}")
    print(f"training {cfg.model['type']} ({cfg.model.get('backbone')}) on {cfg.data.dataset} "
          f"for {cfg.train.epochs} epoch(s), batch {cfg.data.batch_size} per branch")

    try:
        results = train(cfg, progress=not args.fast)
        run_dir = Path(results["run_dir"])
        test = results["test"]
        print(f"train class counts: {results['train_class_counts']}")
        for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            print(f"  epoch {record['epoch']}: alpha {record['alpha']:.3f}, loss {record['loss']:.4f}, "
                  f"test top-1 {record.get('test_top1', float('nan')):.2f}")

        def shown(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.2f}"

        print(f"test top-1 {shown(test['top1'])} | many {shown(test['many_shot'])} | "
              f"medium {shown(test['medium_shot'])} | few {shown(test['few_shot'])} (last epoch)")
        print(f"run folder: {run_dir} ({', '.join(sorted(p.name for p in run_dir.iterdir()))})")
    finally:
        if scratch is not None:
            scratch.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
