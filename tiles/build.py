"""``nagashi tiles build``: an OSM extract in, an atomically written tile database out."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tiles._osm import ProgressFn, read_osm
from tiles.fileio import sha256_file
from tiles.schema import DEFAULT_TILE_DEG, TILES_FILENAME
from tiles.store_write import write_tiles

log = logging.getLogger(__name__)


def output_path(out: str | Path) -> Path:
    """``out`` names the database file (``*.sqlite``/``*.db``) or a directory to hold it."""
    p = Path(out)
    if p.suffix in {".sqlite", ".db", ".sqlite3"}:
        return p
    return p / TILES_FILENAME


def build_tiles(
    osm: str | Path,
    out: str | Path,
    tile_deg: float = DEFAULT_TILE_DEG,
    progress: ProgressFn | None = None,
    country: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Import ``osm`` and write its tiles; returns (database path, summary).

    ``country``: ISO code of the public holidays (``PH``) of conditional restrictions; None: the
    country at the centre of the extract (see :func:`tiles._osm.read_osm`).
    """
    src = Path(osm)
    raw = read_osm(src, progress, country)
    dest = output_path(out)
    source = {"name": src.name, "sha256": sha256_file(src)}
    summary = write_tiles(raw, dest, tile_deg, source)
    if progress:
        progress(f"wrote {dest}")
    return dest, summary
