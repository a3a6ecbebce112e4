"""``lttk plugins`` (what installed plugins register) and ``lttk plugin new`` (a package skeleton)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.markup import escape

from lttoolkit.cli.scaffold import PLUGIN_KINDS, new_plugin
from lttoolkit.registry import ALL_REGISTRIES

KINDS = tuple(PLUGIN_KINDS)  # sampler, loss, schedule, backbone, method, dataset


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    if name == "plugins":
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
        parser.set_defaults(run=run_plugins)
    else:  # "plugin"
        actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        new = actions.add_parser("new", help="write a ready plugin package skeleton",
                                 description="Write a plugin package (pyproject with the entry point, one "
                                             "component, a test) that installs and passes its test as generated.")
        new.add_argument("name", help="distribution name, e.g. lttk-my-losses")
        new.add_argument("--kind", choices=KINDS, default="loss", help="what the example component is")
        new.add_argument("--dir", default=".", help="parent folder of the new package (default: here)")
        new.set_defaults(run=run_new)


def collect_plugins() -> dict[str, Any]:
    """Installed plugin distributions with what each registers, and failures with their cause."""
    distributions: dict[str, dict[str, Any]] = {}
    for kind, registry in ALL_REGISTRIES.items():
        for entry in registry.entries(load="plugins", shadowed=True):
            if not entry.is_plugin:
                continue
            dist = distributions.setdefault(entry.source, {"source": entry.source, "components": [], "broken": []})
            item = {"kind": kind, "name": entry.name, "status": entry.status, "summary": entry.summary}
            if entry.shadowed_by:
                item["shadowed_by"] = entry.shadowed_by
            dist["components"].append(item)
            if entry.error is not None:
                dist["broken"].append({"kind": kind, "name": entry.name, "error": entry.describe_error()})
    return {"plugins": sorted(distributions.values(), key=lambda d: d["source"])}


def run_plugins(args: argparse.Namespace) -> int:
    from lttoolkit.registry import plugins_disabled

    data = collect_plugins()
    data["disabled"] = plugins_disabled()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if data["disabled"]:
        # Discovery off: installed plugins are not even looked at, so "none installed" would be wrong.
        console.print("plugin discovery is off (LTTK_DISABLE_PLUGINS is set): installed plugins are not looked "
                      "for" + (", so none is shown" if not data["plugins"] else "; shown: modules loaded with --plugin")
                      + ". Unset LTTK_DISABLE_PLUGINS to list them.", highlight=False)
        if not data["plugins"]:
            return 0
    if not data["plugins"]:
        console.print("no plugins installed; see docs/plugins.md, or `lttk plugin new NAME` to start one")
        return 0
    table = Table(title="plugins", title_justify="left")
    for column in ("distribution", "kind", "name", "status"):
        table.add_column(column, no_wrap=True)
    table.add_column("summary / cause")
    for dist in data["plugins"]:
        causes = {(b["kind"], b["name"]): b["error"] for b in dist["broken"]}
        for item in dist["components"]:
            status = {"ok": "ok", "broken": "[red]BROKEN[/red]", "shadowed": "[yellow]shadowed[/yellow]"}[item["status"]]
            detail = causes.get((item["kind"], item["name"]), item["summary"])
            if item.get("shadowed_by"):
                detail = f"name taken by {item['shadowed_by']}; use '{dist['source'].split()[0]}::{item['name']}'"
            table.add_row(escape(dist["source"]), item["kind"], escape(item["name"]), status, escape(detail or ""))
    console.print(table)
    return 0


def run_new(args: argparse.Namespace) -> int:
    path = new_plugin(args.name, Path(args.dir), kind=args.kind)
    print(f"wrote {path}\nnext: pip install -e {path} && python -m pytest {path}/tests && lttk plugins")
    return 0
