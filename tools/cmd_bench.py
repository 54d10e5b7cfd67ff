"""``nagashi bench NAME [--json]``: benchmarks that live beside the code they measure.

A benchmark is a module ``<package>/bench_<name>.py`` (package one of tiles, models, safety,
sync, agent, tools) defining ``add_arguments(parser)`` and ``run(args) -> dict``; its result is
printed as JSON (``--json``) or as ``key: value`` lines.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
from pathlib import Path

PACKAGES = ("tiles", "models", "safety", "sync", "agent", "tools")


def discover() -> dict[str, str]:
    root = Path(__file__).resolve().parent.parent
    found: dict[str, str] = {}
    for pkg in PACKAGES:
        for p in sorted((root / pkg).glob("bench_*.py")):
            found[p.stem.removeprefix("bench_")] = f"{pkg}.{p.stem}"
    return found


def _summary(module_name: str) -> str:
    """First line of a benchmark's docstring, read without importing (or parsing) it."""
    path = (
        Path(__file__).resolve().parent.parent.joinpath(*module_name.split(".")).with_suffix(".py")
    )
    m = re.search(r'^\s*[rR]?"""\s*(.*)', path.read_text(encoding="utf-8"))
    return m.group(1).removesuffix('"""').strip() if m else ""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``bench NAME [options]``: only the chosen benchmark's module is imported (benchmarks
    import scipy, the OSM reader, ...: every other command, ``agent run`` first, starts
    without them)."""
    found = discover()
    listing = "\n".join(f"  {name:10s} {_summary(mod)}" for name, mod in sorted(found.items()))
    bench = sub.add_parser(
        "bench",
        help="run a benchmark and print its figures",
        description="benchmarks (nagashi bench NAME --help for each one's options):\n" + listing,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("bench_name", metavar="NAME", choices=sorted(found))
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    bench.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    name = args.bench_name
    module = importlib.import_module(discover()[name])
    p = argparse.ArgumentParser(
        prog=f"nagashi bench {name}", description=(module.__doc__ or "").strip().splitlines()[0]
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    module.add_arguments(p)
    bargs = p.parse_args(args.bench_args)
    result = module.run(bargs)
    if bargs.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0
