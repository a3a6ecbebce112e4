"""``lttk convert-bbn``: an official BBN checkpoint (megvii-research/BBN) as an lttoolkit checkpoint."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("source", metavar="OFFICIAL.pth", help="a checkpoint saved by the official BBN code")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="the run config to record for lttk eval, e.g. data.root=/data data.imbalance_ratio=50")
    parser.add_argument("--arch", required=True, choices=["resnet32_cifar", "resnet50"],
                        help="the official network: resnet32_cifar (bbn_res32_cifar) or resnet50 (bbn_res50)")
    parser.add_argument("-o", "--output", required=True, metavar="CKPT.pt",
                        help="the lttoolkit checkpoint to write (an existing file is never replaced)")
    parser.set_defaults(run=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from lttoolkit.methods.bbn_official import convert_official_bbn_file

    written = convert_official_bbn_file(args.source, args.output, arch=args.arch, overrides=args.overrides)
    Console().print(f"wrote {escape(str(written))}: BBN-{args.arch} from {escape(str(args.source))}; "
                    f"evaluate it with: lttk eval {escape(str(written))} data.root=...", highlight=False)
    return 0
