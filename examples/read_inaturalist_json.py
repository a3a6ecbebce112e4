"""Read an iNaturalist-style JSON annotation file with ``lttoolkit.data``.

BBN (Zhou et al., CVPR 2020) reads iNaturalist 2017/2018 (Van Horn et al., CVPR 2018) from
JSON files of the form::

    {"num_classes": 8142,
     "annotations": [{"fpath": "train_val2018/Plantae/7477/3b60c94.jpg", "category_id": 7477}, ...]}

with ``fpath`` relative to an image root. Without arguments this script writes a tiny
long-tailed file of that form, with its images, into a temporary folder; give ``--json`` (and
``--root``) to read a real one. The official iNaturalist files (``images`` + ``annotations``
with ``image_id``) are converted to that form first. It prints the class counts and the
many/medium/few-shot groups (more than 100, 20 to 100, fewer than 20 training images).

    python examples/read_inaturalist_json.py --fast
    python examples/read_inaturalist_json.py --json /data/iNat2018/iNaturalist2018_train.json --root /data/iNat2018
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Sequence


def write_tiny_inaturalist(folder: Path, *, num_classes: int, n_max: int, imbalance_ratio: float) -> Path:
    """Write a long-tailed JSON file in BBN's form plus one small JPEG per entry; return the JSON path."""
    from PIL import Image

    from lttoolkit.data import long_tailed_counts

    kingdoms = ("Plantae", "Aves", "Insecta", "Fungi")
    annotations = []
    for category, count in enumerate(long_tailed_counts(num_classes, n_max, imbalance_ratio)):
        kingdom = kingdoms[category % len(kingdoms)]
        image_dir = folder / "train_val2018" / kingdom / str(category)
        image_dir.mkdir(parents=True, exist_ok=True)
        colour = (37 * category % 256, 91 * category % 256, 53 * category % 256)
        for index in range(count):
            relative = f"train_val2018/{kingdom}/{category}/{index:04d}.jpg"
            Image.new("RGB", (8, 8), colour).save(folder / relative)
            annotations.append({"fpath": relative, "category_id": category, "image_id": len(annotations)})
    path = folder / "iNaturalist_tiny_train.json"
    path.write_text(json.dumps({"num_classes": num_classes, "annotations": annotations}), encoding="utf-8")
    return path


def convert_official(content: dict[str, Any]) -> dict[str, Any]:
    """The official iNaturalist form (``images`` with ``file_name``, ``annotations`` with
    ``image_id``) in BBN's form (``annotations`` with ``fpath``)."""
    files = {image["id"]: image["file_name"] for image in content["images"]}
    annotations = [{"fpath": files[a["image_id"]], "category_id": a["category_id"]} for a in content["annotations"]]
    num_classes = len(content.get("categories") or []) or None
    return {"annotations": annotations, **({"num_classes": num_classes} if num_classes else {})}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="a smaller generated file (8 classes)")
    parser.add_argument("--json", type=Path, help="a real annotation file (default: write a tiny one)")
    parser.add_argument("--root", type=Path, help="folder the fpath entries are relative to (default: the JSON's)")
    parser.add_argument("--allow-outside-root", action="store_true",
                        help="accept absolute fpath entries (BBN's own dumps store absolute paths)")
    args = parser.parse_args(argv)

    from lttoolkit.data import load_dataset
    from lttoolkit.engine.metrics import shot_groups

    with tempfile.TemporaryDirectory(prefix="lttk-inat-") as scratch:
        folder = Path(scratch)
        if args.json is None:
            shape = dict(num_classes=8, n_max=120, imbalance_ratio=40) if args.fast else \
                dict(num_classes=20, n_max=300, imbalance_ratio=100)
            json_path = write_tiny_inaturalist(folder, **shape)
            root = folder
            print(f"wrote {json_path.name} and its images under {folder} "
                  f"({shape['num_classes']} classes, n_max {shape['n_max']}, imbalance ratio {shape['imbalance_ratio']})")
        else:
            json_path, root = args.json, args.root or args.json.parent
            content = json.loads(json_path.read_text(encoding="utf-8"))
            if "images" in content and content.get("annotations") and "fpath" not in content["annotations"][0]:
                converted = folder / json_path.name
                converted.write_text(json.dumps(convert_official(content)), encoding="utf-8")
                print(f"{json_path} is in the official iNaturalist form; converted to BBN's form in {converted}")
                json_path = converted

        dataset = load_dataset("json", root=root, split="train", annotations=str(json_path),
                               allow_outside_root=args.allow_outside_root)
        counts = dataset.class_counts
        print(f"read {len(dataset)} images of {dataset.num_classes} classes from {json_path.name}")
        print(f"class counts: {counts if len(counts) <= 30 else str(counts[:30])[:-1] + ', ...]'}")
        present = [c for c in counts if c > 0]
        print(f"largest class {max(present)}, smallest {min(present)}: imbalance ratio {max(present) / min(present):.1f}")
        groups = shot_groups(counts)
        for name, label in (("many", "more than 100"), ("medium", "20 to 100"), ("few", "fewer than 20")):
            members = groups[name]
            shown = members if len(members) <= 12 else [*members[:12], "..."]
            print(f"{name}-shot ({label} images): {len(members)} class{'' if len(members) == 1 else 'es'} {shown}")
        image, label = dataset[0]
        print(f"first entry: {dataset.path(0) if hasattr(dataset, 'path') else 0} -> class {label}, "
              f"PIL image {image.size[0]}x{image.size[1]} {image.mode}")
        print("in a training config:\n"
              f"  data: {{dataset: json, root: {root}, train_annotations: {json_path}, test_annotations: ...}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
