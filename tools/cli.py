"""The ``nagashi`` command group.

Each subcommand lives in its own ``tools/cmd_*.py`` module exposing ``register(subparsers)``;
this module only wires them together and turns library errors into one clear line and a
non-zero exit (house style 11).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from tiles.fileio import one_line_error
from tools.errors import known_errors


def command_modules() -> list[str]:
    """Every ``tools/cmd_*.py`` module, sorted: each registers its own subcommands."""
    here = Path(__file__).parent
    return sorted(f"tools.{p.stem}" for p in here.glob("cmd_*.py"))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``nagashi`` parser. With ``command``, only ``tools/cmd_<command>.py`` registers when
    it exists (each module registers the command it is named for, and the others are not
    needed to parse its line: ``agent run`` starts without importing every command's
    dependencies); otherwise, and for ``--help``, every module registers."""
    parser = argparse.ArgumentParser(
        prog="nagashi",
        description="On-device cruising navigation for street-hail taxis.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    modules = command_modules()
    if command is not None and f"tools.cmd_{command}" in modules:
        modules = [f"tools.cmd_{command}"]
    for name in modules:
        module = importlib.import_module(name)
        module.register(sub)
    return parser


def command_of(argv: Sequence[str]) -> str | None:
    """The command word of a command line (after ``-v``), None with ``-h`` before it."""
    for token in argv:
        if token in ("-h", "--help"):
            return None
        if not token.startswith("-"):
            return token
    return None


_NEGATIVE_VALUE = re.compile(r"^-\d")


def _join_negative_values(argv: Sequence[str]) -> list[str]:
    """Let ``--from -73.98,40.75`` work: argparse would read the value as an option."""
    out: list[str] = []
    for token in argv:
        if out and _NEGATIVE_VALUE.match(token) and out[-1].startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    words = _join_negative_values(sys.argv[1:] if argv is None else argv)
    args = build_parser(command_of(words)).parse_args(words)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        rc = args.func(args)
    except known_errors() as e:
        print(f"nagashi: error: {one_line_error(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader (e.g. ``| head``) went away: not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("nagashi: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
