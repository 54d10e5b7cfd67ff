"""Regenerate ``osm_conditionals.tsv``: every ``*:conditional`` tag on a ``highway`` way of the
three OSM extracts in ../shared/data/osm (© OpenStreetMap contributors, ODbL 1.0).

    python tests/data/make_osm_conditionals.py [--osm-dir ../shared/data/osm]
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path
from typing import Any

import osmium

HERE = Path(__file__).resolve().parent
EXTRACTS = ("nyc_manhattan_midtown", "tokyo_shibuya_roads", "monaco_osrm")
OUT = HERE / "osm_conditionals.tsv"


class _Conditionals(osmium.SimpleHandler):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, str, str, str]] = []

    def way(self, w: Any) -> None:
        if "highway" not in w.tags:
            return
        for t in w.tags:
            if t.k.endswith(":conditional"):
                self.rows.append((w.id, w.tags["highway"], t.k, t.v))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--osm-dir", type=Path, default=HERE.parent.parent.parent / "shared/data/osm")
    args = p.parse_args()
    buf = io.StringIO()
    out = csv.writer(buf, delimiter="\t", lineterminator="\n")
    out.writerow(["area", "way_id", "highway", "key", "value"])
    for area in EXTRACTS:
        h = _Conditionals()
        h.apply_file(str(args.osm_dir / f"{area}.osm.pbf"))
        for row in sorted(h.rows):
            out.writerow([area, *row])
    OUT.write_text(buf.getvalue(), encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
