"""The code version the trip log records (agent.version)."""

from __future__ import annotations

from importlib import metadata

from agent.version import code_version, package_version


def test_the_package_version_is_the_installed_distributions() -> None:
    """Read from pyproject.toml in the source tree (no importlib.metadata on the first tick,
    issue 20): the same version the installed distribution's metadata gives."""
    assert package_version() == metadata.version("nagashi")
    assert code_version()["package"] == package_version()
    assert len(code_version()["sha256"]) == 64
