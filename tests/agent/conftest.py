"""Agent test fixtures: the Manhattan bundle built from the real data (once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

DRIVE_CSV = Path(__file__).resolve().parent.parent / "data" / "midtown_drive.csv"


@pytest.fixture(scope="session")
def manhattan_bundle(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A real bundle (tiles, TLC demand, params, area) built by the demo's builder."""
    from agent.demo import build_manhattan_bundle

    return build_manhattan_bundle(shared_data, tmp_path_factory.mktemp("bundle-work"))
