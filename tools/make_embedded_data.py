#!/usr/bin/env python
"""Build lttoolkit's embedded Fashion-MNIST-LT subset from the Fashion-MNIST IDX files.

Fashion-MNIST: Xiao, Rasul and Vollgraf, arXiv:1708.07747, 2017 (MIT licence,
Copyright (c) 2017 Zalando SE). The training subset follows the exponential
long-tail profile of Cao et al. (LDAM-DRW, NeurIPS 2019) also used by BBN
(Zhou et al., CVPR 2020); the test subset is balanced.

    python tools/make_embedded_data.py            # reads /usr/share/datasets/fashion-mnist
    python tools/make_embedded_data.py --source-dir ~/fashion-mnist --seed 1

Writes ``lttoolkit/data/embedded/fashion_mnist_lt.npz``, ``LICENSE-fashion-mnist.txt``
and ``README.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lttoolkit.data import FASHION_MNIST_DIR, class_counts, load_fashion_mnist, make_long_tailed

OUT_DIR = Path(__file__).resolve().parents[1] / "lttoolkit" / "data" / "embedded"

LICENSE_TEXT = """\
The file fashion_mnist_lt.npz in this folder holds a subset of Fashion-MNIST
(https://github.com/zalandoresearch/fashion-mnist), made by tools/make_embedded_data.py
(see README.md in this folder). Fashion-MNIST is distributed under the MIT licence:

The MIT License (MIT)

Copyright (c) 2017 Zalando SE, https://tech.zalando.com

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

README_TEXT = """\
# Embedded data

`fashion_mnist_lt.npz`: a long-tailed subset of Fashion-MNIST (Xiao et al. 2017; MIT licence,
see `LICENSE-fashion-mnist.txt`), made by `{command}` from
Debian's `dataset-fashion-mnist` IDX files: training images chosen from the 60,000-image
training split with `lttoolkit.data.make_long_tailed` (profile `{profile}`, imbalance ratio
{imbalance_ratio:g}, n_max {n_max}, seed {seed}; {n_train} images, per class {train_counts}), and
{test_per_class} test images per class (balanced, seed {seed}) from the 10,000-image test split.

Keys: `train_images` uint8 [N, 28, 28], `train_labels` int64, `test_images`, `test_labels`,
`classes`, and the metadata `imbalance_ratio`, `n_max`, `seed`, `profile`, `test_per_class`,
`source`. Load it with `lttoolkit.data.load_embedded()`.
"""


def build(source_dir: str, imbalance_ratio: float, n_max: int, test_per_class: int, seed: int,
          profile: str) -> dict[str, np.ndarray]:
    """Select the subsets and return the arrays to store."""
    train = load_fashion_mnist(source_dir, "train")
    test = load_fashion_mnist(source_dir, "test")
    train_idx = make_long_tailed(train.labels, imbalance_ratio, profile=profile, n_max=n_max, seed=seed)
    # A balanced selection is the long-tailed one with ratio 1.
    test_idx = make_long_tailed(test.labels, 1, n_max=test_per_class, seed=seed)
    return {
        "train_images": train.images[train_idx],
        "train_labels": train.labels[train_idx].astype(np.int64),
        "test_images": test.images[test_idx],
        "test_labels": test.labels[test_idx].astype(np.int64),
        "classes": np.array(train.classes),
        "imbalance_ratio": np.array(float(imbalance_ratio)),
        "n_max": np.array(n_max),
        "seed": np.array(seed),
        "profile": np.array(profile),
        "test_per_class": np.array(test_per_class),
        "source": np.array("Fashion-MNIST (Xiao et al. 2017), Copyright (c) 2017 Zalando SE, MIT licence"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-dir", default=FASHION_MNIST_DIR, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--imbalance-ratio", type=float, default=100.0)
    parser.add_argument("--n-max", type=int, default=600, help="training images of the head class")
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", default="exp", choices=["exp", "step"])
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)

    arrays = build(args.source_dir, args.imbalance_ratio, args.n_max, args.test_per_class, args.seed, args.profile)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    npz_path = args.out_dir / "fashion_mnist_lt.npz"
    np.savez_compressed(npz_path, **arrays)
    (args.out_dir / "LICENSE-fashion-mnist.txt").write_text(LICENSE_TEXT, encoding="utf-8")
    given = argv if argv is not None else sys.argv[1:]
    command = " ".join(["python tools/make_embedded_data.py", *given])
    (args.out_dir / "README.md").write_text(
        README_TEXT.format(
            command=command,
            profile=args.profile,
            imbalance_ratio=args.imbalance_ratio,
            n_max=args.n_max,
            seed=args.seed,
            n_train=len(arrays["train_labels"]),
            train_counts=class_counts(arrays["train_labels"], 10),
            test_per_class=args.test_per_class,
        ),
        encoding="utf-8",
    )
    size_kb = npz_path.stat().st_size / 1024
    print(f"wrote {npz_path} ({size_kb:.0f} KiB): {len(arrays['train_labels'])} train, "
          f"{len(arrays['test_labels'])} test images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
