"""``lttk train``, ``lttk eval`` and ``lttk predict``: thin wrappers over :mod:`lttoolkit.engine`."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    if name == "train":
        parser.add_argument("args", nargs="*", metavar="[CONFIG] [KEY=VALUE]",
                            help="an optional YAML config, then dotted overrides such as train.epochs=10")
        parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt")
        parser.add_argument("--from", dest="init_from", metavar="CHECKPOINT",
                            help="start from this checkpoint's weights (decoupling stage 2: model.type=crt/lws/tau_norm)")
        parser.add_argument("--quiet", action="store_true", help="no progress bars")
        parser.set_defaults(run=run_train)
    elif name == "eval":
        parser.add_argument("checkpoint", help="best.pt or last.pt of a run")
        parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                            help="change the data, e.g. data.root=/data/cifar (default: the run's own test split)")
        parser.add_argument("--device", default="auto")
        parser.add_argument("--json", action="store_true", help="print all metrics as JSON")
        parser.set_defaults(run=run_eval)
    elif name == "analyze":
        parser.add_argument("checkpoint", help="best.pt or last.pt of a run")
        parser.add_argument("--plot", metavar="PNG", help="also plot the norms (needs lttoolkit[plot])")
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(run=run_analyze)
    elif name == "predict":
        parser.add_argument("checkpoint", help="best.pt or last.pt of a run")
        parser.add_argument("images", nargs="+", help="image files")
        parser.add_argument("--topk", type=int, default=5)
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(run=run_predict)


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
    if args.init_from:
        overrides = [*overrides, f"init_from={args.init_from}"]
    train(config, overrides, resume=args.resume, progress=not args.quiet)
    return 0


def _print_metrics(results: dict[str, Any], title: str) -> None:
    from rich.console import Console

    from lttoolkit.engine.progress import results_table

    Console().print(results_table(results, title=title))


def run_eval(args: argparse.Namespace) -> int:
    from lttoolkit.engine import evaluate_checkpoint

    results = evaluate_checkpoint(args.checkpoint, args.overrides, device=args.device)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _print_metrics(results, f"{args.checkpoint} (epoch {results.get('epoch')})")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from lttoolkit.engine import predict

    predictions = predict(args.checkpoint, args.images, topk=args.topk)
    if args.json:
        print(json.dumps(predictions, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="predictions", title_justify="left")
    table.add_column("image")
    table.add_column("top classes (probability)")
    for item in predictions:
        table.add_row(item["image"], ", ".join(f"{t['class']} ({t['probability']:.3f})" for t in item["top"]))
    Console().print(table)
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
    table = Table(title=f"{analysis['method']}: per-class classifier weight norms", title_justify="left")
    table.add_column("class")
    table.add_column("train images", justify="right")
    for part in norms:
        table.add_column(part, justify="right")
    classes = analysis["classes"] or [str(i) for i in range(len(norms["both"]))]
    counts = analysis["train_class_counts"] or [None] * len(classes)
    for i, name in enumerate(classes):
        table.add_row(name, str(counts[i]), *(f"{norms[part][i]:.3f}" for part in norms))
    Console().print(table)
    if args.plot:
        print(f"plot written to {analysis['plot']}")
    return 0
