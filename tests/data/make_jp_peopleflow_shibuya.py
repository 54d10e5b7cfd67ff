"""Regenerate the Shibuya cut of MLIT's people-flow (``jp_peopleflow_shibuya_2019.csv``) and the
MLIT polygons of those meshes (``jp_peopleflow_shibuya_mesh.geojson``): derived, not invented.

The source is MLIT's 全国の人流オープンデータ (CC BY 4.0,
「全国の人流オープンデータ」（国土交通省）) as copied into ``../shared/data/jp_peopleflow``
(see that folder's README: k15015kk/tokyu-geodata-storage, population_tokyo/2019): the
twelve ``monthly_mdp_mesh1km.csv`` files of Tokyo and ``13tokyo1km.geojson``, the mesh
polygons. The cut keeps every row, unchanged and in the files' order (months 01..12), of the
1 km meshes that cover the bounding box of the Shibuya OSM extract's road network
(data/osm/tokyo_shibuya_roads.osm.pbf), and, for the mesh-code tests, the polygons of those
meshes plus two reference meshes: 53394611 (Tokyo Station, Chiyoda) and 53393599 (Toranomon /
Kamiyacho, Minato).

    python tests/data/make_jp_peopleflow_shibuya.py [--source ../shared/data/jp_peopleflow]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from models.peopleflow import mesh1km_of  # noqa: E402
from tiles import TileStore, build_tiles  # noqa: E402
from tiles.fileio import atomic_write_bytes, real_data_dir  # noqa: E402

OSM = REPO / "data" / "osm" / "tokyo_shibuya_roads.osm.pbf"
OUT_CSV = HERE / "jp_peopleflow_shibuya_2019.csv"
OUT_GEOJSON = HERE / "jp_peopleflow_shibuya_mesh.geojson"
REFERENCE_MESHES = (53394611, 53393599)


def shibuya_meshes() -> list[int]:
    """The 1 km meshes covering the bounding box of the Shibuya road network."""
    with tempfile.TemporaryDirectory() as tmp:
        path, _ = build_tiles(OSM, Path(tmp))
        with TileStore(path) as store:
            g = store.all()
            lon = np.concatenate([g.u_lon, g.v_lon]).astype(np.float64)
            lat = np.concatenate([g.u_lat, g.v_lat]).astype(np.float64)
    step_lon, step_lat = 45.0 / 3600.0 / 2, 30.0 / 3600.0 / 2
    xs = np.arange(lon.min(), lon.max() + step_lon, step_lon)
    ys = np.arange(lat.min(), lat.max() + step_lat, step_lat)
    gx, gy = np.meshgrid(np.minimum(xs, lon.max()), np.minimum(ys, lat.max()))
    return sorted({int(c) for c in mesh1km_of(gx.ravel(), gy.ravel())})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = real_data_dir() / "jp_peopleflow"
    if not default.is_dir():
        default = REPO.parent / "shared" / "data" / "jp_peopleflow"
    ap.add_argument("--source", type=Path, default=default)
    args = ap.parse_args()
    meshes = shibuya_meshes()
    keep = {str(c) for c in meshes}
    lines: list[str] = []
    header = ""
    for month in range(1, 13):
        f = args.source / "population_tokyo" / "2019" / f"{month:02d}" / "monthly_mdp_mesh1km.csv"
        text = f.read_text(encoding="utf-8-sig").splitlines()
        header = header or text[0]
        if text[0] != header:
            raise SystemExit(f"{f}: header differs from the first file's")
        lines += [line for line in text[1:] if line.split(",", 1)[0] in keep]
    atomic_write_bytes(OUT_CSV, ("\n".join([header, *lines]) + "\n").encode())
    geo = json.loads((args.source / "13tokyo1km.geojson").read_text(encoding="utf-8"))
    wanted = keep | {str(c) for c in REFERENCE_MESHES}
    feats = [f for f in geo["features"] if str(f["properties"]["code"]) in wanted]
    doc = {"type": "FeatureCollection", "crs": geo.get("crs"), "features": feats}
    atomic_write_bytes(OUT_GEOJSON, (json.dumps(doc, indent=1) + "\n").encode())
    print(f"{OUT_CSV.name}: {len(lines)} rows of {len(meshes)} meshes {meshes}")
    print(f"{OUT_GEOJSON.name}: {len(feats)} polygons")


if __name__ == "__main__":
    main()
