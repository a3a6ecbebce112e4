"""``lttk train``, ``lttk eval`` and ``lttk predict``: thin wrappers over :mod:`lttoolkit.engine`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.markup import escape


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    if name == "train":
        parser.add_argument("args", nargs="*", metavar="[CONFIG] [KEY=VALUE]",
                            help="an optional YAML config, then dotted overrides such as train.epochs=10")
        parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt")
        parser.add_argument("--from", dest="init_from", metavar="CHECKPOINT",
                            help="start from this checkpoint's weights (decoupling stage 2: model.type=crt/lws/tau_norm)")
        parser.add_argument("--overwrite", action="store_true",
                            help="if the run folder already holds files, move it aside to NAME.replaced-TIME "
                                 "(nothing is deleted) and start a new run there; without it such a folder is refused")
        parser.add_argument("--quiet", action="store_true",
                            help="no progress bars or per-epoch lines; the results and the run folder are still printed")
        parser.set_defaults(run=run_train)
    elif name == "eval":
        parser.add_argument("checkpoint", help="best.pt or last.pt of a run")
        parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                            help="change the data, e.g. data.root=/data/cifar (default: the run's own test split)")
        parser.add_argument("--device", default="auto")
        parser.add_argument("--json", action="store_true", help="print all metrics as JSON")
        parser.add_argument("--confusion-matrix", metavar="FILE.npy",
                            help="also write the C x C confusion matrix (int64; rows: true class) to this new .npy "
                                 "file; it never goes into the printed results")
        parser.set_defaults(run=run_eval)
    elif name == "analyze":
        parser.add_argument("checkpoint", help="best.pt or last.pt of a run")
        parser.add_argument("--plot", metavar="PNG", help="also plot the norms (needs lttoolkit[plot])")
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(run=run_analyze)
    elif name == "predict":
        parser.add_argument("checkpoint", help="best.pt or last.pt of a run")
        parser.add_argument("images", nargs="+", help="image files, folders (their images) or glob patterns")
        parser.add_argument("--topk", type=_positive_int, default=5, help="how many classes per image (at least 1)")
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(run=run_predict)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def split_config_and_overrides(args: list[str]) -> tuple[str | None, list[str]]:
    """``["cfg.yaml", "a=1"]`` -> ``("cfg.yaml", ["a=1"])``; the config is the first item without '='."""
    config = None
    overrides = []
    for i, item in enumerate(args):
        if "=" not in item and i == 0:
            config = item
        elif "=" not in item:
            from lttoolkit.errors import ConfigError

            raise ConfigError(f"{item!r} is not KEY=VALUE; only the first argument may be a config file")
        else:
            overrides.append(item)
    return config, overrides


def run_train(args: argparse.Namespace) -> int:
    from lttoolkit.engine import train

    config, overrides = split_config_and_overrides(args.args)
    if args.resume and config:
        from lttoolkit.errors import ConfigError

        raise ConfigError("--resume continues a run with its own config.yaml; do not pass a CONFIG with it")
    if args.resume and args.init_from:
        from lttoolkit.errors import ConfigError

        raise ConfigError("--from starts a new run from a checkpoint's weights and --resume continues a run from its "
                          "own last.pt: pass one of them, not both")
    if args.resume and args.overwrite:
        from lttoolkit.errors import ConfigError

        raise ConfigError("--overwrite starts a new run in place of an old one; --resume continues the old one: "
                          "pass one of them")
    if args.init_from:
        overrides = [*overrides, f"init_from={args.init_from}"]
    train(config, overrides, resume=args.resume, progress=not args.quiet, overwrite=args.overwrite)
    return 0


def _print_metrics(results: dict[str, Any], title: str) -> None:
    from rich.console import Console

    from lttoolkit.engine.progress import results_table

    console = Console()
    console.print(results_table(results, title=escape(title)))
    if results.get("confusion_matrix_file"):
        console.print(f"confusion matrix written to {escape(results['confusion_matrix_file'])} "
                      f"(numpy.load; rows: true class, columns: predicted)", highlight=False)


def run_eval(args: argparse.Namespace) -> int:
    from lttoolkit.engine import evaluate_checkpoint

    results = evaluate_checkpoint(args.checkpoint, args.overrides, device=args.device,
                                  confusion_matrix=args.confusion_matrix)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _print_metrics(results, f"{args.checkpoint} (epoch {results.get('epoch')})")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from lttoolkit.engine import predict

    predictions = predict(args.checkpoint, args.images, topk=args.topk)
    # One unreadable image does not hide the others' results; the exit status says some failed.
    failed = [item for item in predictions if "error" in item]
    if args.json:
        print(json.dumps(predictions, indent=2))
        return 2 if failed else 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="predictions", title_justify="left")
    table.add_column("image")
    table.add_column("top classes (probability)")
    for item in predictions:
        if "error" in item:
            table.add_row(escape(item["image"]), f"[red]not read[/red]: {escape(item['error'])}")
        else:
            table.add_row(escape(item["image"]),
                          escape(", ".join(f"{t['class']} ({t['probability']:.3f})" for t in item["top"])))
    Console().print(table)
    if failed:
        Console(stderr=True).print(f"[bold red]error:[/] {len(failed)} of {len(predictions)} image(s) could not be "
                                   f"read: {escape('; '.join(item['image'] for item in failed))}", highlight=False)
        return 2
    return 0


def run_analyze(args: argparse.Namespace) -> int:
    from lttoolkit.engine.analysis import analyze_checkpoint, plot_weight_norms

    analysis = analyze_checkpoint(args.checkpoint)
    if args.plot:
        analysis["plot"] = str(plot_weight_norms(analysis, args.plot))
    if args.json:
        print(json.dumps(analysis, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    norms = analysis["weight_norms"]
    table = Table(title=f"{escape(analysis['method'])}: per-class classifier weight norms", title_justify="left")
    table.add_column("class")
    table.add_column("train images", justify="right")
    for part in norms:
        table.add_column(part, justify="right")
    classes = analysis["classes"] or [str(i) for i in range(len(norms["both"]))]
    counts = analysis["train_class_counts"] or [None] * len(classes)
    for i, name in enumerate(classes):
        table.add_row(escape(name), str(counts[i]), *(f"{norms[part][i]:.3f}" for part in norms))
    Console().print(table)
    if args.plot:
        print(f"plot written to {analysis['plot']}")
    return 0
