"""Fixtures of the agent's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models import DemandTable
from tiles import TileStore


@pytest.fixture(scope="module")
def manhattan(manhattan_tiles: Path, manhattan_demand: Path) -> Iterator[tuple[TileStore, Any]]:
    """The Manhattan tiles open and their demand table (the planner's kernel tests)."""
    store = TileStore(manhattan_tiles)
    yield store, DemandTable.load(manhattan_demand)
    store.close()
