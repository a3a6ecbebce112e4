"""Two-stage decoupling: learn the representation with ``ce``, then fix the classifier.

Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition",
ICLR 2020. Stage 1 trains a plain instance-sampled network with a validation split held out
from the training data. Stage 2 starts from the stage-1 checkpoint (``init_from``, the
``--from`` of ``lttk train``) and changes only the classifier:

* ``crt``: re-train the classifier with class-balanced sampling, the features frozen;
* ``tau_norm``: no training; divide each class's weights by their norm to the power tau,
  tau chosen on the validation split (never on the test set).

    python examples/two_stage_decoupling.py --fast
    python examples/two_stage_decoupling.py --epochs 16 --stage2-epochs 4

The same with the command line:

    lttk train model.type=ce data.val_fraction=0.1 name=stage1
    lttk train model.type=crt data.val_fraction=0.1 train.epochs=4 --from runs/stage1/best.pt
    lttk train model.type=tau_norm data.val_fraction=0.1 --from runs/stage1/best.pt
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any, Sequence


def _shown(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.1f}"


def _summary(stage: str, results: dict[str, Any]) -> str:
    test = results["test"]
    return (f"{stage:<9} test top-1 {_shown(test['top1'])} | many {_shown(test['many_shot'])} | "
            f"medium {_shown(test['medium_shot'])} | few {_shown(test['few_shot'])}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="ResNet-20, batch 16, 1 epoch of 2 steps per stage")
    parser.add_argument("--epochs", type=int, default=16, help="stage-1 epochs")
    parser.add_argument("--stage2-epochs", type=int, default=4, help="cRT epochs")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="held out from each class for validation")
    parser.add_argument("--output-dir", help="parent of the three run folders (default: a temporary folder)")
    args = parser.parse_args(argv)

    from lttoolkit.engine import load_config, train
    from lttoolkit.engine.trainer import quickstart_config_path

    scratch = None
    if args.output_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="lttk-decoupling-")
        args.output_dir = scratch.name
    # Every stage uses the same seed and val_fraction, so the same images are held out.
    common = [f"data.val_fraction={args.val_fraction}", f"output_dir={args.output_dir}", "seed=0"]
    if args.fast:
        common += ["model.backbone=resnet20_cifar", "data.batch_size=16", "train.max_steps_per_epoch=2",
                   "optim.warmup_epochs=0"]
        args.epochs = args.stage2_epochs = 1
    backbone = "resnet20_cifar" if args.fast else "resnet32_cifar"

    def run(name: str, overrides: list[str]) -> dict[str, Any]:
        cfg = load_config(quickstart_config_path(), [*common, f"name={name}", *overrides])
        return train(cfg, progress=not args.fast)

    try:
        stage1 = run("stage1-ce", ["model.type=ce", f"model.backbone={backbone}", f"train.epochs={args.epochs}"])
        best = stage1["best_checkpoint"]
        checkpoint = Path(stage1["run_dir"]) / "best.pt"
        print(f"stage 1: ce for {args.epochs} epoch(s); best.pt is epoch {best['epoch']}, "
              f"selected on {best['selected_on']} (val top-1 {_shown(best['top1']).strip()})")
        crt = run("stage2-crt", ["model.type=crt", f"model.backbone={backbone}",
                                 f"train.epochs={args.stage2_epochs}", f"init_from={checkpoint}"])
        tau = run("stage2-tau", ["model.type=tau_norm", f"model.backbone={backbone}", f"init_from={checkpoint}"])
        choice = tau["calibration"]
        print(f"stage 2: crt re-trained the classifier for {args.stage2_epochs} epoch(s); tau_norm chose "
              f"tau = {choice['tau']} on the validation split (val mean class accuracy "
              f"{choice['val_mean_class_accuracy']:.1f})")
        print(f"class counts of the training split (validation held out): {stage1['train_class_counts']}")
        for stage, results in (("ce", stage1), ("crt", crt), ("tau_norm", tau)):
            print(_summary(stage, results))
    finally:
        if scratch is not None:
            scratch.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
