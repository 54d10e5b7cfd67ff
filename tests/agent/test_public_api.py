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


def test_runtime_import_loads_only_what_the_first_tick_needs() -> None:
    """Start-up (issue 20): the TUF client, the AWS signer behind securesystemslib, scipy,
    sqlite-utils and httpx are imported where they are used (sync, routing, building tiles),
    not by ``import agent.runtime``."""
    heavy = ["tuf", "securesystemslib", "boto3", "scipy", "sqlite_utils", "httpx", "uvicorn"]
    code = f"import sys, agent.runtime; print(*[m in sys.modules for m in {heavy!r}])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert dict(zip(heavy, out.stdout.split(), strict=True)) == dict.fromkeys(heavy, "False")


def test_lazy_package_names_still_resolve() -> None:
    import models
    import sync

    for pkg in (models, sync):
        for name in pkg.__all__:
            assert getattr(pkg, name) is not None, (pkg.__name__, name)
        with pytest.raises(AttributeError):
            _ = pkg.NoSuchThing
