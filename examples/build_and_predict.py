"""Build a BBN model with ``lttoolkit.build`` and run inference on Fashion-MNIST test images.

BBN (Zhou et al., "BBN: Bilateral-Branch Network with Cumulative Learning for Long-Tailed
Visual Recognition", CVPR 2020) is assembled from registered pieces; the model carries its
recipe, runs the trunk once at inference and returns logits = W·[f_c ; f_r] + b.

Without ``--checkpoint`` the weights are freshly initialised, so the predictions are
arbitrary: the point is the calls. With ``--checkpoint runs/RUN/best.pt`` (from
``lttk train``) the trained model is rebuilt from the recipe stored in the checkpoint.

    python examples/build_and_predict.py --fast
    python examples/build_and_predict.py --checkpoint runs/RUN/best.pt --images 16
"""

from __future__ import annotations

import argparse
import time
from typing import Sequence

import torch


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="tiny settings: ResNet-20, 8 images")
    parser.add_argument("--backbone", default="resnet32_cifar", help="any backbone name, e.g. resnet20_cifar")
    parser.add_argument("--checkpoint", help="a best.pt/last.pt of a run, instead of fresh weights")
    parser.add_argument("--images", type=int, default=32, help="how many test images to classify")
    parser.add_argument("--topk", type=int, default=3)
    args = parser.parse_args(argv)
    if args.fast:
        args.backbone, args.images = "resnet20_cifar", 8

    from lttoolkit import build
    from lttoolkit.data import build_transforms, load_dataset

    torch.manual_seed(0)
    if args.checkpoint:
        from lttoolkit.engine import load_model

        model, state = load_model(args.checkpoint)
        print(f"loaded {args.checkpoint} (epoch {state.get('epoch')}), rebuilt from its recipe")
    else:
        # One input channel: Fashion-MNIST is grey. num_classes is the shared classifier's size.
        model = build("bbn", backbone=args.backbone, num_classes=10, in_chans=1)
        print(f"built {type(model).__name__} with backbone {args.backbone}, fresh weights")
    recipe = model.recipe
    print(f"recipe: method={recipe.method}, samplers="
          f"{ {stream: spec.type for stream, spec in recipe.samplers.items()} }, "
          f"loss={recipe.loss.type}, schedule={recipe.schedule.type if recipe.schedule else None}")
    if hasattr(model, "split_at"):
        print(f"duplicated block: {model.split_at}")

    test = load_dataset("embedded", split="test",
                        transform=build_transforms("fashion_mnist", train=False, in_chans=recipe.in_chans))
    # Evenly spaced over the (shuffled, balanced) test split.
    indices = [int(i) for i in torch.linspace(0, len(test) - 1, args.images).round()]
    images = torch.stack([test[i][0] for i in indices])
    labels = [test[i][1] for i in indices]

    model.eval()
    started = time.perf_counter()
    with torch.no_grad():
        probabilities = model(images).softmax(dim=1)
    elapsed = time.perf_counter() - started
    top = probabilities.topk(min(args.topk, probabilities.shape[1]), dim=1)
    correct = 0
    for row, label in enumerate(labels):
        guesses = ", ".join(f"{test.classes[int(c)]} {float(p):.2f}"
                            for p, c in zip(top.values[row], top.indices[row]))
        correct += int(top.indices[row, 0]) == label
        print(f"  image {indices[row]:4d} ({test.classes[label]:>11}): {guesses}")
    print(f"predicted {len(labels)} images in {elapsed:.3f} s; top-1 {correct}/{len(labels)} correct")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
