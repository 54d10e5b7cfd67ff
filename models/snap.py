"""Snapping trip pickups to the directed road link a cab would stop on, vectorised.

Only links a cruising taxi may be on (``graph.cruise_allowed()``: never motorway, private or pier)
are candidates. Every link's shape is densified into points every ``spacing_m`` and put in one
``scipy.spatial.cKDTree``; each pickup's ``k`` nearest shape points name candidate segments, and
the exact point-to-segment distance picks the nearest. A pickup farther than ``radius_m`` from
every allowed link is dropped (``no_link_within_radius``).

Direction (documented choice). A one-way street has one directed link: the pickup goes there. A
two-way street has two directed links on the same geometry, and a GPS pickup (median error ~15 m)
cannot tell which curb the passenger stood on. We use the trip's drop-off: passengers hail a cab
already heading their way, so when the drop-off lies at least ``min_dropoff_m`` away and the
bearing to it is within 60 degrees of one direction of the street (``|cos| >= 0.5``), the pickup
goes to that direction; otherwise (no drop-off, short trip, cross-street destination) it is split
evenly between the two directions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from tiles import Graph
from tiles.geo import bearing_deg, haversine_m
from tiles.matching import segments

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SnapConfig:
    """Snapping parameters (metres)."""

    radius_m: float = 60.0  # pickups lie a median 15 m, p95 ~50 m from the nearest node
    spacing_m: float = 8.0  # densification of link shapes for the KD-tree
    k: int = 24  # shape points examined per pickup
    min_dropoff_m: float = 300.0  # shorter trips say nothing about the hailing direction
    min_abs_cos: float = 0.5  # |cos(bearing to drop-off - street bearing)|: within 60 degrees


@dataclass(frozen=True, eq=False)
class Snapped:
    """Per pickup: up to two directed links (local indices) and the share of each."""

    edge_a: I64  # local edge index, -1 when dropped
    edge_b: I64  # the other direction of a two-way street, -1 if none
    weight_a: F64  # share of the pickup on edge_a (1 - weight_a on edge_b)
    distance_m: F64  # pickup to the link, inf when dropped
    rule: npt.NDArray[np.int8]  # 0 dropped, 1 one-way, 2 by drop-off, 3 split evenly

    @property
    def ok(self) -> npt.NDArray[np.bool_]:
        return np.asarray(self.edge_a >= 0)

    def summary(self) -> dict[str, int]:
        return {
            "dropped_no_link_within_radius": int(np.sum(self.rule == 0)),
            "one_direction": int(np.sum(self.rule == 1)),
            "direction_by_dropoff": int(np.sum(self.rule == 2)),
            "split_two_directions": int(np.sum(self.rule == 3)),
        }

    def edge_weights(self, n_edges: int) -> tuple[I64, I64, F64]:
        """(trip index, local edge, weight) rows: one or two per snapped pickup."""
        ok = self.ok
        idx = np.flatnonzero(ok)
        a = self.edge_a[ok]
        wa = self.weight_a[ok]
        b = self.edge_b[ok]
        has_b = (b >= 0) & (wa < 1.0)
        trip = np.concatenate([idx, idx[has_b]])
        edge = np.concatenate([a, b[has_b]])
        w = np.concatenate([wa, 1.0 - wa[has_b]])
        keep = w > 0
        return trip[keep], edge[keep], w[keep]


def twin_edges(g: Graph) -> I64:
    """Local index of each edge's reverse on the same way (-1 when one-way)."""
    n_nodes = int(max(g.u_node.max(initial=0), g.v_node.max(initial=0))) + 1
    key = g.u_node.astype(np.int64) * n_nodes + g.v_node.astype(np.int64)
    rkey = g.v_node.astype(np.int64) * n_nodes + g.u_node.astype(np.int64)
    order = np.argsort(key, kind="stable")
    pos = np.searchsorted(key[order], rkey)
    pos = np.clip(pos, 0, len(order) - 1)
    cand = order[pos]
    ok = (key[cand] == rkey) & (g.way_id[cand] == g.way_id)
    return np.where(ok, cand, -1).astype(np.int64)


def snap_pickups(
    g: Graph,
    lon: F64,
    lat: F64,
    dropoff_lon: F64,
    dropoff_lat: F64,
    config: SnapConfig = SnapConfig(),
    allowed: npt.NDArray[np.bool_] | None = None,
) -> Snapped:
    """Snap pickups (and use their drop-offs for direction) to directed links of ``g``."""
    n = int(np.asarray(lon).shape[0])
    allowed = g.cruise_allowed() if allowed is None else allowed
    segs = segments(g)
    proj = segs.proj
    keep = allowed[segs.edge]
    seg_edge = segs.edge[keep]
    edge_a = np.full(n, -1, dtype=np.int64)
    dist = np.full(n, np.inf)
    seg_bearing_best = np.zeros(n)
    if seg_edge.size and n:
        x0, y0, dx, dy = segs.x0[keep], segs.y0[keep], segs.dx[keep], segs.dy[keep]
        seg_len = segs.seg_len[keep]
        per = np.maximum(np.ceil(seg_len / config.spacing_m).astype(np.int64), 1) + 1
        owner = np.repeat(np.arange(seg_edge.size, dtype=np.int64), per)
        k_in = np.arange(int(per.sum()), dtype=np.int64) - np.repeat(np.cumsum(per) - per, per)
        t = k_in / np.repeat(per - 1, per)
        dense = np.column_stack([x0[owner] + t * dx[owner], y0[owner] + t * dy[owner]])
        tree = cKDTree(dense)
        px, py = proj.to_xy(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
        k = min(config.k, dense.shape[0])
        upper = config.radius_m + config.spacing_m
        _, nn = tree.query(np.column_stack([px, py]), k=k, distance_upper_bound=upper)
        nn = np.asarray(nn).reshape(n, k)
        valid = nn < dense.shape[0]
        seg = np.where(valid, owner[np.minimum(nn, dense.shape[0] - 1)], 0)
        sx0, sy0, sdx, sdy = x0[seg], y0[seg], dx[seg], dy[seg]
        sl2 = sdx * sdx + sdy * sdy
        with np.errstate(invalid="ignore", divide="ignore"):
            tt = ((px[:, None] - sx0) * sdx + (py[:, None] - sy0) * sdy) / sl2
        tt = np.clip(np.where(np.isfinite(tt), tt, 0.0), 0.0, 1.0)
        d = np.hypot(px[:, None] - (sx0 + tt * sdx), py[:, None] - (sy0 + tt * sdy))
        d = np.where(valid, d, np.inf)
        best = np.argmin(d, axis=1)
        rows = np.arange(n)
        dist = d[rows, best]
        hit = dist <= config.radius_m
        best_seg = seg[rows, best]
        edge_a = np.where(hit, seg_edge[best_seg], -1)
        seg_bearing_best = np.degrees(np.arctan2(dx[best_seg], dy[best_seg])) % 360.0
        dist = np.where(hit, dist, np.inf)
    twin = twin_edges(g)
    edge_b = np.where(edge_a >= 0, twin[np.maximum(edge_a, 0)], -1)
    edge_b = np.where((edge_b >= 0) & allowed[np.maximum(edge_b, 0)], edge_b, -1)
    dlon = np.asarray(dropoff_lon, dtype=np.float64)
    dlat = np.asarray(dropoff_lat, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        far = haversine_m(lon, lat, dlon, dlat) >= config.min_dropoff_m
        cos = np.cos(np.radians(bearing_deg(lon, lat, dlon, dlat) - seg_bearing_best))
    decided = far & np.isfinite(cos) & (np.abs(cos) >= config.min_abs_cos)
    weight_a = np.where(edge_b < 0, 1.0, np.where(decided, (cos > 0).astype(np.float64), 0.5))
    rule = np.where(edge_a < 0, 0, np.where(edge_b < 0, 1, np.where(decided, 2, 3))).astype(np.int8)
    return Snapped(edge_a, edge_b, weight_a, dist, rule)
