"""Fixtures of the safety tests: real graphs of both extracts (opened once per session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tiles import Graph, TileStore


@pytest.fixture(scope="session")
def manhattan_store(manhattan_tiles: Path) -> Iterator[TileStore]:
    store = TileStore(manhattan_tiles)
    yield store
    store.close()


@pytest.fixture(scope="session")
def shibuya_store(shibuya_tiles: Path) -> Iterator[TileStore]:
    store = TileStore(shibuya_tiles)
    yield store
    store.close()


@pytest.fixture(scope="session")
def manhattan(manhattan_store: TileStore) -> Graph:
    return manhattan_store.all()


@pytest.fixture(scope="session")
def shibuya(shibuya_store: TileStore) -> Graph:
    return shibuya_store.all()
