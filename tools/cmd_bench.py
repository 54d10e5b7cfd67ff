"""``nagashi bench NAME [--json]``: benchmarks that live beside the code they measure.

A benchmark is a module ``<package>/bench_<name>.py`` (package one of tiles, models, safety,
sync, agent, tools) defining ``add_arguments(parser)`` and ``run(args) -> dict``; its result is
printed as JSON (``--json``) or as ``key: value`` lines.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

PACKAGES = ("tiles", "models", "safety", "sync", "agent", "tools")


def discover() -> dict[str, str]:
    root = Path(__file__).resolve().parent.parent
    found: dict[str, str] = {}
    for pkg in PACKAGES:
        for p in sorted((root / pkg).glob("bench_*.py")):
            found[p.stem.removeprefix("bench_")] = f"{pkg}.{p.stem}"
    return found


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="run a benchmark and print its figures")
    bsub = bench.add_subparsers(dest="bench_name", metavar="NAME")
    bsub.required = True
    for name, module_name in sorted(discover().items()):
        module = importlib.import_module(module_name)
        p = bsub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        module.add_arguments(p)
        p.set_defaults(func=_runner(module))


def _runner(module: object):  # type: ignore[no-untyped-def]
    def run(args: argparse.Namespace) -> int:
        result = module.run(args)  # type: ignore[attr-defined]
        if args.json:
            print(json.dumps(result, indent=2, sort_keys=True))
        else:
            for k, v in result.items():
                print(f"{k}: {v}")
        return 0

    return run
