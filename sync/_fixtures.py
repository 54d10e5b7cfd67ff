"""Inputs for building bundles in tests and in the sync benchmark (not used by the agent).

The demand table written here has the right shape for the tile database it is built on and
plausible non-negative values; its numbers are not under test in sync/ (models/ owns them).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from sync.manifest import Composed, compose_docs
from tiles.fileio import sqlite_readonly_uri


def tiles_meta(tiles: Path) -> dict[str, str]:
    conn = sqlite3.connect(sqlite_readonly_uri(tiles), uri=True)
    try:
        return dict(conn.execute("SELECT key, value FROM meta").fetchall())
    finally:
        conn.close()


def write_demand(
    tiles: Path, out_dir: Path, version: str, seed: int = 0, *, cell_m: float | None = None
) -> Path:
    """A valid DemandTable for the network in ``tiles`` (deterministic for a seed); its cell
    grid is 4 x 4 cells of 0.005 degrees, or the demand model's grid of ``cell_m`` cells."""
    from models import DAY_TYPES, SLOTS_PER_DAY, CellGrid, DemandTable

    meta = tiles_meta(tiles)
    n = int(meta["n_edges"])
    bbox = json.loads(meta["summary"])["bbox"]
    rng = np.random.default_rng(seed)
    grid = CellGrid(bbox[0], bbox[1], 0.005, 0.005, 4, 4)
    if cell_m is not None:
        from models.statistics import make_grid
        from tiles import TileStore

        with TileStore(tiles) as store:
            grid = make_grid(store.all(), cell_m)
    dropoff = rng.random((grid.n_cells, grid.n_cells + 1)).astype(np.float32)
    dropoff /= dropoff.sum(axis=1, keepdims=True)
    fare = (5 + 20 * rng.random(n)).astype(np.float32)
    table = DemandTable(
        network_sha256=meta["source_sha256"],
        n_edges=n,
        pickups_per_h=rng.gamma(1.0, 0.2, (len(DAY_TYPES), SLOTS_PER_DAY, n)).astype(np.float32),
        fare_mean=fare,
        fare_quantiles=np.stack([fare * 0.6, fare, fare * 1.8], axis=1).astype(np.float32),
        trip_duration_s=(300 + 900 * rng.random(n)).astype(np.float32),
        trip_distance_m=(1000 + 5000 * rng.random(n)).astype(np.float32),
        grid=grid,
        edge_cell=rng.integers(0, grid.n_cells, n).astype(np.int32),
        dropoff=dropoff,
        scale_factor=1.0,
        version=version,
        meta={"source": "sync test fixture (synthetic values)"},
    )
    table.validate()
    table.save(out_dir)
    return out_dir


def base_manifest(source_sha256: str, area: str = "monaco", **versions: str) -> dict[str, Any]:
    v = {
        "road": "osm-test-1",
        "demand": "stat-test-1",
        "model": "none",
        "params": "params-1",
        "area": "area-1",
        "cost": "cost-q-1",
        **versions,
    }
    return {
        "schema_version": 1,
        "area": area,
        "road_network": {"version": v["road"], "source_sha256": source_sha256},
        "statistical_demand": {"version": v["demand"]},
        "predicted_demand": {"version": v["model"]},
        "regulation_patterns": {"A": {"version": 3}, "B": {"version": 2}},
        "cost_features": {"version": v["cost"]},
        "business_area": {"version": v["area"], "name": area},
        "planner_parameters": {"version": v["params"]},
    }


def write_inputs(
    root: Path,
    tiles: Path,
    manifest: dict[str, Any],
    *,
    demand_seed: int = 0,
    cell_m: float | None = None,
) -> dict[str, Path]:
    """params.yaml, area.geojson, demand/ and a copy of the tiles under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    t = root / "tiles.sqlite"
    if not t.exists():
        shutil.copyfile(tiles, t)
    demand = write_demand(
        t,
        root / "demand",
        manifest["statistical_demand"]["version"],
        seed=demand_seed,
        cell_m=cell_m,
    )
    params = root / "params.yaml"
    params.write_text(
        f"version: {manifest['planner_parameters']['version']}\n"
        f"cost_features_version: {manifest['cost_features']['version']}\n"
        "demand_scale: 1.0\nhorizon_min: 30\n"
    )
    meta = tiles_meta(t)
    b = json.loads(meta["summary"])["bbox"]
    ring = [[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]], [b[0], b[1]]]
    area = root / "area.geojson"
    area.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "version": manifest["business_area"]["version"],
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"name": manifest.get("area", "area")},
                        "geometry": {"type": "Polygon", "coordinates": [ring]},
                    }
                ],
            },
            sort_keys=True,
        )
    )
    return {"tiles": t, "demand": demand, "params": params, "area": area}


def composed(manifest: dict[str, Any]) -> Composed:
    return compose_docs(manifest, [])


def change_one_tile(
    tiles: Path, tile_index: int = 0, speed_factor: float = 0.9, *, renumber: bool = False
) -> int:
    """Rewrite one tile's edge records (speeds scaled): a one-tile data update.

    By default the blob keeps its size, so only the pages holding that tile (and the header)
    change. ``renumber=True`` imitates what a re-import does when a tile gains an edge: the
    tile's blob grows by one record and the ``first_edge`` of every later tile shifts by one
    (the global edge numbering moves). Returns the tile id.
    """
    from tiles.store import EDGE_DTYPE

    conn = sqlite3.connect(tiles)
    try:
        rows = conn.execute("SELECT tile_id, edges FROM tiles ORDER BY tile_id").fetchall()
        tid, blob = rows[tile_index]
        rec = np.frombuffer(blob, dtype=EDGE_DTYPE).copy()
        rec["speed_kph"] *= np.float32(speed_factor)
        if renumber:
            rec = np.concatenate([rec, rec[:1]])
            conn.execute(
                "UPDATE tiles SET first_edge = first_edge + 1 WHERE first_edge > "
                "(SELECT first_edge FROM tiles WHERE tile_id = ?)",
                (tid,),
            )
        conn.execute("UPDATE tiles SET edges = ? WHERE tile_id = ?", (rec.tobytes(), tid))
        conn.commit()
    finally:
        conn.close()
    return int(tid)


def sign_forged_index(repo: Any, area: str, index: dict[str, Any], now: Any) -> None:
    """Sign ``index`` as ``area``'s bundle index the way a compromised (or buggy) publisher
    would: with the fleet's own keys, whatever it says. The chunk targets stay those of the
    genuinely published index (tests of the client's distrust of signed data)."""
    from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]  # no __all__ there

    from sync.repository import index_target_path

    data = json.dumps(index, sort_keys=True, indent=1).encode()
    path = index_target_path(area)
    genuine = repo.published()
    real_targets = repo._targets_for

    def forged_targets(published: dict[str, Any]) -> dict[str, TargetFile]:
        out: dict[str, TargetFile] = real_targets(published)
        out[path] = TargetFile.from_data(path, data, ["sha256"])
        return out

    with repo._lock():
        repo._write_target(path, data)
        repo._targets_for = forged_targets
        try:
            repo._sign_chain(now, genuine, bump_targets=True)
        finally:
            del repo._targets_for
