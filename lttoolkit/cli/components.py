"""``lttk list-components``: what is in the registries, where it came from, what is broken."""

from __future__ import annotations

import argparse
import fnmatch
import json
from typing import Any

from lttoolkit.registry import ALL_REGISTRIES, Entry


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("kind", nargs="?", choices=sorted(ALL_REGISTRIES), help="only this registry")
    parser.add_argument("--filter", metavar="PATTERN", default="*",
                        help="fnmatch pattern on names, e.g. 'resnet*' (also lists matching timm models)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(run=run)


def _row(entry: Entry) -> dict[str, Any]:
    return {
        "kind": entry.kind,
        "name": entry.name,
        "source": entry.source,
        "status": entry.status,
        "summary": entry.summary,
        "error": entry.describe_error() or None,
        "shadowed_by": entry.shadowed_by,
    }


def collect(kind: str | None, pattern: str = "*", *, with_timm: bool | None = None) -> dict[str, Any]:
    """The data behind the command: entries per registry, plus timm's matching names.

    timm (and torch) are imported only when asked for backbones explicitly or
    with a filter, since importing them takes seconds.
    """
    kinds = [kind] if kind else list(ALL_REGISTRIES)
    out: dict[str, Any] = {"registries": {}, "timm": None}
    for name in kinds:
        registry = ALL_REGISTRIES[name]
        entries = registry.entries(pattern, load="plugins", shadowed=True)
        out["registries"][name] = [_row(e) for e in entries]
    if with_timm is None:
        with_timm = "backbones" in kinds and (kind == "backbones" or pattern != "*")
    if with_timm:
        import timm

        # Ours are in timm's registry too (lttoolkit.backbones.cifar_resnet registers them); list them once, as ours.
        ours = set(ALL_REGISTRIES["backbones"].list())
        names = [n for n in timm.list_models() if fnmatch.fnmatchcase(n, pattern) and n not in ours]
        out["timm"] = {"version": timm.__version__, "count": len(names),
                       "names": names if pattern != "*" else []}
    return out


def run(args: argparse.Namespace) -> int:
    data = collect(args.kind, args.filter)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    broken = 0
    for kind, rows in data["registries"].items():
        table = Table(title=kind, title_justify="left", expand=False)
        table.add_column("name", style="bold cyan", no_wrap=True)
        table.add_column("source", no_wrap=True)
        table.add_column("summary")
        for row in rows:
            # Names, sources and summaries are plugin text: escaped, never read as rich markup.
            summary = escape(row["summary"] or "")
            if row["status"] == "broken":
                broken += 1
                summary = f"[red]BROKEN[/red]: {escape(str(row['error']))}"
            elif row["status"] == "shadowed":
                summary = (f"[yellow]shadowed by {escape(str(row['shadowed_by']))}[/yellow] "
                           f"(use '{escape(row['source'].split()[0])}::{escape(row['name'])}'): {summary}")
            table.add_row(escape(row["name"]), escape(row["source"]), summary)
        if kind == "backbones":
            timm_info = data["timm"]
            if timm_info is None:
                table.add_row("<any timm model>", "timm", "every timm model name is a backbone "
                              "(`lttk list-components backbones --filter 'resnet*'` lists them)")
            else:
                table.add_row(f"<{timm_info['count']} timm models>", f"timm {timm_info['version']}",
                              ", ".join(timm_info["names"][:40]) + (" ..." if len(timm_info["names"]) > 40 else ""))
        console.print(table)
    if broken:
        console.print(f"[red]{broken} plugin component(s) failed to load[/red]; set LTTK_DISABLE_PLUGINS=1 to skip plugins.")
    return 0
