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


def test_the_prefetched_code_version_is_the_one_computed() -> None:
    from agent import version

    version._code_version.cache_clear()
    version.prefetch_code_version().join(timeout=60)
    assert version._code_version.cache_info().currsize == 1  # the thread computed it
    got = code_version()
    version._code_version.cache_clear()
    assert code_version() == got
