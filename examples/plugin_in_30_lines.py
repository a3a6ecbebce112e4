"""A plugin in 30 lines: a new alpha schedule and a new loss, registered with decorators.

A plain module is a plugin: importing it registers its components, and lttoolkit imports it
for you from ``lttoolkit.load_plugin("plugin_in_30_lines")``, ``lttk --plugin
plugin_in_30_lines`` or ``plugins: [plugin_in_30_lines]`` in a config. Installed packages
declare the same classes as entry points instead (docs/plugins.md).

    python examples/plugin_in_30_lines.py --fast         # trains one tiny epoch with both
    PYTHONPATH=examples lttk --plugin plugin_in_30_lines list-components schedules
    PYTHONPATH=examples lttk --plugin plugin_in_30_lines train model.schedule=sigmoid model.loss=poly1
"""

from __future__ import annotations

if __name__ == "__main__":
    # Run as a script, Python would register these components under the name `__main__`. Load
    # the file as the module `plugin_in_30_lines` instead (the name configs and checkpoints
    # use), so they register once, attributed to it, and run its demo from there.
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from lttoolkit import load_plugin

    print(f"load_plugin('plugin_in_30_lines') registered {load_plugin('plugin_in_30_lines')}")
    sys.exit(sys.modules["plugin_in_30_lines"].main())

# ------------------------------------------------------------------------------- the plugin
import math
from typing import Any, Sequence

import torch.nn.functional as F
from torch import Tensor

from lttoolkit.losses import LongTailLoss
from lttoolkit.registry import LOSSES, SCHEDULES


@SCHEDULES.register(name="sigmoid")
class SigmoidDecay:
    """alpha = 1 / (1 + exp(steepness * (T/T_max - midpoint))): a smooth switch between branches."""

    def __init__(self, steepness: float = 10.0, midpoint: float = 0.5) -> None:
        self.steepness, self.midpoint = steepness, midpoint

    def __call__(self, epoch: int, max_epochs: int) -> float:
        return 1.0 / (1.0 + math.exp(self.steepness * (epoch / max_epochs - self.midpoint)))


@LOSSES.register(name="poly1")
class Poly1Loss(LongTailLoss):
    """Poly-1 cross-entropy (Leng et al., "PolyLoss", ICLR 2022): CE + epsilon * (1 - p_t)."""

    def __init__(self, class_counts: Sequence[int], *, epsilon: float = 1.0, **options: Any) -> None:
        super().__init__(class_counts, **options)  # re-weighting and DRW options come for free
        self.epsilon = float(epsilon)

    def per_sample_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        log_p = F.log_softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
        return -log_p + self.epsilon * (1.0 - log_p.exp())


# ------------------------------------------------------------------------------- the demo
def main(argv: list[str] | None = None) -> int:
    """Train BBN with the plugin's schedule and loss on the embedded data."""
    import argparse
    import tempfile

    from lttoolkit.engine import load_config, load_model, train

    parser = argparse.ArgumentParser(description="train BBN with this file's schedule and loss")
    parser.add_argument("--fast", action="store_true", help="ResNet-20, batch 16, 1 epoch of 2 steps")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args(argv)

    for registry, name in ((SCHEDULES, "sigmoid"), (LOSSES, "poly1")):
        entry = registry.entry(name)
        print(f"{registry.kind}: {name!r} from {entry.source}: {entry.summary}")
    schedule = SCHEDULES.build("sigmoid", steepness=8.0)
    print("sigmoid alpha over 10 epochs:", [round(schedule(t, 10), 3) for t in range(10)])

    with tempfile.TemporaryDirectory(prefix="lttk-plugin-") as out:
        overrides = [
            "plugins=[plugin_in_30_lines]",  # saved in config.yaml; lttk eval needs --plugin plugin_in_30_lines
            "model.schedule.type=sigmoid", "model.schedule.steepness=8.0",
            "model.loss.type=poly1", "model.loss.epsilon=2.0", "model.loss.reweight=sqrt_inverse",
            f"train.epochs={1 if args.fast else args.epochs}", "optim.warmup_epochs=0", f"output_dir={out}",
        ]
        if args.fast:
            overrides += ["model.backbone=resnet20_cifar", "data.batch_size=16", "train.max_steps_per_epoch=2"]
        results = train(load_config(None, overrides), progress=not args.fast)
        model, state = load_model(f"{results['run_dir']}/last.pt")
        print(f"trained with schedule {model.recipe.schedule.as_dict()} and loss {model.recipe.loss.as_dict()}: "
              f"test top-1 {results['test']['top1']:.2f} after {results['epochs']} epoch(s)")
    return 0
