"""``TileStore.way_names`` keeps the names it read (every plan names its route's streets): the
same answers as a fresh store's, asked in any order and mixed with ways it does not have."""

from __future__ import annotations

from pathlib import Path

import pytest

import tiles.store as tiles_store
from tiles import TileStore


def test_kept_names_are_the_ones_read(monaco_tiles: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with TileStore(monaco_tiles) as store:
        ways = sorted({int(w) for w in store.all().way_id})
    absent = max(ways) + 12345
    halves = [ways[::2], ways[1::2]]
    with TileStore(monaco_tiles) as fresh:
        want = fresh.way_names(ways)
    assert want and all(isinstance(v, str) for v in want.values())
    monkeypatch.setattr(tiles_store, "_WAY_NAMES_KEPT", len(ways) // 3)  # cleared on the way
    with TileStore(monaco_tiles) as store:
        for part in (*halves, [*ways[:50], absent], ways, [absent], list(reversed(ways))):
            got = store.way_names(part)
            assert got == {w: want[w] for w in sorted(set(part)) if w in want}
            assert list(got) == sorted(got)  # in way order, as the query gave them
        assert absent not in store.way_names([absent, ways[0]])
