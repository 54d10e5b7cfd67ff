"""The pyosmium pass over an extract: the drivable ways (with why the others are excluded),
pier and port areas, and the turn-restriction relations that bind a taxi."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import osmium
import shapely
from shapely.geometry import Polygon

from tiles import tags as T

ProgressFn = Callable[[str], None]


@dataclass
class RawWay:
    way_id: int
    node_ids: list[int]
    lons: list[float]
    lats: list[float]
    tags: dict[str, str]


@dataclass
class RawRestriction:
    relation_id: int
    kind: str  # e.g. "no_left_turn"
    from_way: int
    via_nodes: list[int]
    via_ways: list[int]
    to_way: int


class Collector(osmium.SimpleHandler):
    def __init__(self, progress: ProgressFn | None) -> None:
        super().__init__()
        self.ways: list[RawWay] = []
        self.excluded: Counter[str] = Counter()
        self.pier_polygons: list[Polygon] = []
        self.pier_nodes: set[int] = set()
        self.restrictions: list[RawRestriction] = []
        self.skipped_restrictions: Counter[str] = Counter()
        self.excluded_conditionals: list[dict[str, Any]] = []
        self.progress = progress
        self.n_seen = 0

    def way(self, w: Any) -> None:
        self.n_seen += 1
        if self.progress and self.n_seen % 20000 == 0:
            self.progress(f"read {self.n_seen} ways")
        tags = {t.k: t.v for t in w.tags}
        is_pier_area = (
            tags.get("man_made") == "pier"
            or tags.get("landuse") == "port"
            or tags.get("industrial") == "port"
            or tags.get("harbour") == "yes"
        )
        if is_pier_area and "highway" not in tags:
            coords = [(n.lon, n.lat) for n in w.nodes if n.location.valid()]
            if w.is_closed() and len(coords) >= 4:
                poly = Polygon(coords)
                if not poly.is_valid:
                    poly = shapely.make_valid(poly)
                self.pier_polygons.append(poly)
            else:
                self.pier_nodes.update(n.ref for n in w.nodes)
        if "highway" not in tags:
            return
        reason = T.exclusion_reason(tags)
        if reason is not None:
            self.excluded[reason] += 1
            self._exclude_conditionals(w.id, tags, reason)
            return
        node_ids: list[int] = []
        lons: list[float] = []
        lats: list[float] = []
        for n in w.nodes:
            if not n.location.valid():
                continue
            if node_ids and node_ids[-1] == n.ref:
                continue
            node_ids.append(n.ref)
            lons.append(n.lon)
            lats.append(n.lat)
        if len(node_ids) < 2:
            self.excluded["missing_nodes"] += 1
            self._exclude_conditionals(w.id, tags, "missing_nodes")
            return
        self.ways.append(RawWay(w.id, node_ids, lons, lats, tags))

    def _exclude_conditionals(self, way_id: int, tags: dict[str, str], reason: str) -> None:
        self.excluded_conditionals.extend(
            {"way_id": way_id, "key": k, "value": v, "status": "way_excluded", "reason": reason}
            for k, v in sorted(tags.items())
            if k.endswith(":conditional")
        )

    def relation(self, r: Any) -> None:
        tags = {t.k: t.v for t in r.tags}
        if tags.get("type") == "multipolygon" and (
            tags.get("man_made") == "pier" or tags.get("landuse") == "port"
        ):
            self.skipped_restrictions["pier_multipolygon_not_used"] += 1
        if tags.get("type") != "restriction":
            return
        kind = tags.get("restriction") or tags.get("restriction:motorcar")
        if kind is None and "restriction:conditional" in tags:
            kind = tags["restriction:conditional"].split("@")[0].strip()
        if kind is None:
            self.skipped_restrictions["other_vehicle_class"] += 1
            return
        excepted = {x.strip() for x in tags.get("except", "").split(";")}
        if excepted & {"taxi", "psv", "motorcar"}:
            self.skipped_restrictions["taxi_excepted"] += 1
            return
        frm = [m.ref for m in r.members if m.role == "from" and m.type == "w"]
        to = [m.ref for m in r.members if m.role == "to" and m.type == "w"]
        via_n = [m.ref for m in r.members if m.role == "via" and m.type == "n"]
        via_w = [m.ref for m in r.members if m.role == "via" and m.type == "w"]
        if len(frm) != 1 or len(to) != 1 or not (via_n or via_w):
            self.skipped_restrictions["malformed"] += 1
            return
        if not (kind.startswith("no_") or kind.startswith("only_")):
            self.skipped_restrictions["unknown_kind"] += 1
            return
        self.restrictions.append(RawRestriction(r.id, kind, frm[0], via_n, via_w, to[0]))
