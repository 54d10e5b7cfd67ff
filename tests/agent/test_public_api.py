"""agent's public API resolves, and importing the planner does not pull in the web server."""

from __future__ import annotations

import subprocess
import sys

import pytest

import agent


def test_every_public_name_resolves() -> None:
    for name in agent.__all__:
        assert getattr(agent, name) is not None, name
    with pytest.raises(AttributeError):
        _ = agent.NoSuchThing


def test_planner_import_stays_light() -> None:
    code = "import sys, agent.planner; print('uvicorn' in sys.modules, 'starlette' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
