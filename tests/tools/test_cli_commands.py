"""``nagashi COMMAND ...`` registers only ``tools/cmd_COMMAND.py`` (start-up, issue 20); the
parser it builds is the full parser's for that command."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from tools.cli import build_parser, command_modules, command_of


def _choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no sub-commands")


FULL = _choices(build_parser())
OWN = sorted(m.removeprefix("tools.cmd_") for m in command_modules())


@pytest.mark.parametrize("command", OWN)
def test_each_module_registers_its_own_command_as_the_full_parser_does(command: str) -> None:
    own = _choices(build_parser(command))
    assert command in own, f"tools/cmd_{command}.py must register `nagashi {command}`"
    assert own[command].format_help() == FULL[command].format_help()


def test_other_commands_and_help_get_the_full_parser() -> None:
    assert "route" in FULL and "route" not in OWN  # registered by tools/cmd_tiles.py
    assert set(_choices(build_parser("route"))) == set(FULL)
    assert set(_choices(build_parser(None))) == set(FULL)
    assert command_of(["-v", "agent", "run"]) == "agent"
    assert command_of(["-h", "agent"]) is None
    assert command_of(["-v"]) is None


def test_agent_run_imports_no_other_command_module() -> None:
    code = (
        "import sys; from tools.cli import build_parser; build_parser('agent');"
        " print(*sorted(m for m in sys.modules if m.startswith('tools.cmd_')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["tools.cmd_agent"]
