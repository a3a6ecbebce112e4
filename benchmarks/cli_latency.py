"""Start-up latency of the ``lttk`` command against ``python -c "import timm"``.

``lttk --help`` and ``lttk list-components`` read the registries' builtin table
(``lttoolkit/registry/_builtins.py``) and must not import torch or timm;
``lttk list-components backbones`` imports timm on purpose to count its models.
Each command runs as a fresh subprocess, the commands interleaved, several
repetitions each; the median wall time is reported. ``python -c pass`` is the
interpreter's own start-up, the floor under every row.

Target: ``lttk list-components`` takes at most a quarter of ``import timm``.

Run: ``python benchmarks/cli_latency.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

NAME = "cli_latency"
DESCRIPTION = "wall time of lttk --help / list-components against python -c 'import timm' (subprocesses)"
RATIO_TARGET = 0.25


def lttk_command() -> list[str]:
    """The ``lttk`` console script next to this interpreter, else on PATH, else ``python -m lttoolkit``."""
    beside = Path(sys.executable).parent / "lttk"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("lttk")
    return [found] if found else [sys.executable, "-m", "lttoolkit"]


def commands() -> dict[str, list[str]]:
    lttk = lttk_command()
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "lttk --help": [*lttk, "--help"],
        "lttk list-components": [*lttk, "list-components"],
        "lttk list-components backbones": [*lttk, "list-components", "backbones"],
        "python -c 'import timm'": [sys.executable, "-c", "import timm"],
    }


def check_outputs(cmds: dict[str, list[str]], env: dict[str, str]) -> tuple[dict[str, Any], dict[str, float]]:
    """Run each command once (the warm-up) and check it does what its row claims.

    Returns:
        The checks, and each command's wall seconds in this run.
    """
    checks: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name, cmd in cmds.items():
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        seconds[name] = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{name!r} failed with exit code {proc.returncode}:\n{proc.stderr[-2000:]}")
        checks[name] = {"exit_code": proc.returncode, "stdout_chars": len(proc.stdout)}
        if name == "lttk list-components backbones":
            checks["backbones lists a timm count"] = "timm models>" in proc.stdout
        elif name == "lttk list-components":
            checks["plain listing names no timm model"] = "timm models>" not in proc.stdout
    probe = ("import sys; from lttoolkit.cli import main; main(['list-components']); "
             "print('HEAVY', 'torch' in sys.modules, 'timm' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    heavy = [line for line in proc.stderr.splitlines() if line.startswith("HEAVY")]
    if heavy:
        _, torch_loaded, timm_loaded = heavy[-1].split()
        checks["list-components imports torch"] = torch_loaded == "True"
        checks["list-components imports timm"] = timm_loaded == "True"
    return checks, seconds


def run_once(cmd: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.decode(errors='replace')[-2000:]}")


def parse_args(argv: list[str] | None = None) -> Any:
    parser = _common.base_parser(NAME, DESCRIPTION, threads=False)
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per command (default 7; --quick times the checking run only)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = _common.Report(NAME, DESCRIPTION, args, import_torch=False)
    repeats = args.repeats or (1 if args.quick else 7)
    # Wide terminal so rich lays out the same table in every run; the user's plugins stay as they are.
    env = {**os.environ, "COLUMNS": "160"}
    cmds = commands()
    report.settings.update({"repeats": repeats, "warmup": "the checking run of each command",
                            "commands": {k: " ".join(v) for k, v in cmds.items()},
                            "env": {k: os.environ.get(k) for k in ("LTTK_DISABLE_PLUGINS", "PYTHONDONTWRITEBYTECODE")},
                            "order": "commands interleaved per repetition, after one untimed checking run of each"})
    _common.print_note("checking what each command does ...")
    report.data["checks"], first_run = check_outputs(cmds, env)
    if args.quick:
        # A smoke test: the checking run is the one timed repetition.
        times = {name: [first_run[name]] for name in cmds}
        report.settings.update(repeats=1, warmup=None)
    else:
        _common.print_note(f"{repeats} interleaved rounds of {len(cmds)} commands")
        started = time.perf_counter()
        times = _common.interleaved({name: (lambda c=cmd: run_once(c, env)) for name, cmd in cmds.items()},
                                    repeats, warmup=0)
        _common.print_note(f"timed in {time.perf_counter() - started:.1f} s")
    stats = {name: _common.summary(samples) for name, samples in times.items()}
    timm_s = stats["python -c 'import timm'"]["median"]
    for name in cmds:
        report.results.append({"command": name, "median_s": stats[name]["median"],
                               "ratio_to_import_timm": _common.ratio(stats[name]["median"], timm_s),
                               "seconds": stats[name]})
    value = _common.ratio(stats["lttk list-components"]["median"], timm_s)
    report.add_target("lttk list-components / import timm", value, "<=", RATIO_TARGET)
    _common.print_table("CLI latency: median wall seconds per subprocess",
                        ["command", "median s", "min s", "max s", "x import timm"],
                        [(r["command"], r["median_s"], r["seconds"]["min"], r["seconds"]["max"],
                          r["ratio_to_import_timm"]) for r in report.results], plain=args.plain)
    checks = report.data["checks"]
    _common.print_note(f"checks: list-components imports torch: {checks.get('list-components imports torch')}, "
                       f"timm: {checks.get('list-components imports timm')}; backbones shows a timm count: "
                       f"{checks['backbones lists a timm count']}")
    report.print_targets(plain=args.plain)
    report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
