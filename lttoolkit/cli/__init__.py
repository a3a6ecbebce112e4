"""The ``lttk`` command: a thin layer over the library.

Every command is a library call a user could make from Python. Heavy imports
(torch, timm) happen inside the commands that need them, so ``lttk --help`` and
``lttk list-components`` start fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from lttoolkit._version import __version__

__all__ = ["main", "build_parser"]

# command name -> (module, function, help). Modules are imported only when run.
_COMMANDS: dict[str, tuple[str, str]] = {
    "list-components": ("lttoolkit.cli.components", "list components in the registries (builtin and plugins)"),
    "train": ("lttoolkit.cli.train", "train a model (BBN on the embedded Fashion-MNIST-LT by default)"),
    "eval": ("lttoolkit.cli.train", "evaluate a checkpoint: top-1/top-5, many/medium/few-shot, per class"),
    "predict": ("lttoolkit.cli.train", "top-k classes for image files with a trained checkpoint"),
    "analyze": ("lttoolkit.cli.train", "per-class classifier weight norms of a checkpoint (BBN paper, Fig. 5)"),
    "export": ("lttoolkit.cli.export", "export a checkpoint for deployment (torch.export, ONNX, safetensors), checked"),
    "convert-bbn": ("lttoolkit.cli.convert", "an official BBN checkpoint (megvii-research/BBN) as an lttoolkit one"),
    "plugins": ("lttoolkit.cli.plugins", "installed plugins: versions, what each registers, failures"),
    "plugin": ("lttoolkit.cli.plugins", "plugin tools: `lttk plugin new NAME` writes a package skeleton"),
}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (each command adds its own arguments)."""
    import importlib

    parser = argparse.ArgumentParser(
        prog="lttk",
        description="lttoolkit: long-tailed visual recognition (BBN and friends) from registered pieces.",
    )
    parser.add_argument("--version", action="version", version=f"lttoolkit {__version__}")
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first so its components register (repeatable); see docs/plugins.md",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_IntermixedParser)
    for name, (module, help_text) in _COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        # Own dest: sharing "plugin" would let the subcommand's list replace the top-level one.
        command.add_argument("--plugin", action="append", dest="command_plugin", default=[], metavar="MODULE",
                             help="import MODULE first so its components register (repeatable)")
        mod = importlib.import_module(module)
        getattr(mod, "add_arguments")(command, name)
    return parser


class _IntermixedParser(argparse.ArgumentParser):
    """A command's parser that takes options between positionals (``a=1 --quiet b=2``), as
    :meth:`argparse.ArgumentParser.parse_intermixed_args` does; commands with sub-actions parse as usual."""

    _parsing = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._parsing or self._subparsers is not None or self._takes_remainder():
            return super().parse_known_args(args, namespace)
        self._parsing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing = False

    def _takes_remainder(self) -> bool:
        # argparse cannot intermix around REMAINDER / PARSER positionals: those parse as usual.
        return any(action.nargs in (argparse.REMAINDER, argparse.PARSER) for action in self._actions)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lttk`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    from lttoolkit.errors import LTToolkitError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    try:
        plugins = [*args.plugin, *getattr(args, "command_plugin", [])]
        if plugins:
            from lttoolkit.registry import load_plugin

            for module in plugins:
                load_plugin(module)
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
    except LTToolkitError as exc:
        _print_error(exc)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _print_error(exc: BaseException) -> None:
    from rich.console import Console
    from rich.markup import escape

    # The message holds user text (paths, names, "pip install 'lttoolkit[plot]'"): never markup.
    Console(stderr=True).print(f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))}", highlight=False,
                               markup=True)
