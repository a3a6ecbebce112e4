"""``lttk export``: a trained run as a deployable file (torch.export, ONNX or safetensors), checked on the spot."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("checkpoint", help="best.pt or last.pt of a run")
    parser.add_argument("--format", required=True, choices=["pt2", "onnx", "safetensors"],
                        help="pt2: a torch.export program; onnx: needs lttoolkit[export]; "
                             "safetensors: the weights with the recipe and preprocessing as metadata")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="the file to write (an existing file is never replaced)")
    parser.add_argument("--batch", type=int, default=2, help="images in the check batch (the export stays dynamic)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from lttoolkit.export import export_checkpoint

    result = export_checkpoint(args.checkpoint, args.output, format=args.format, batch=args.batch)
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    if result.checked:
        check = (f"checked: its logits equal the eager model's on a batch of {result.batch} "
                 f"(max |difference| {result.max_abs_difference:.2g}, tolerance {result.tolerance:g})")
    else:
        check = f"not checked ({result.note})"
    Console().print(f"wrote {escape(result.path)} ({result.format}); {escape(check)}", highlight=False)
    return 0
