"""Map matching of a single GPS fix to the most likely directed road link.

Each candidate link within ``radius_m`` is scored by a Gaussian position error and, when the
cab is moving fast enough for its GPS heading to mean something, a Gaussian heading error:

    score = (d / sigma_m)^2 + (dtheta / sigma_heading_deg)^2      (lower is better)

The likelihoods ``exp(-score/2)`` are normalised over candidates into a confidence for the best
one. The match is *ambiguous* when the runner-up lies on another road (not the same street in
the other direction) and is nearly as likely: parallel roads, stacked ramps, service roads
beside an avenue. safety/ turns low confidence and ambiguity into "follow the road".
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tiles.errors import NoMatchError
from tiles.geo import LocalProjection, angle_diff_deg, bearing_deg
from tiles.graph import Graph


@dataclass(frozen=True)
class MatchConfig:
    """Map-matching parameters (metres, degrees, metres per second)."""

    radius_m: float = 50.0
    sigma_m: float = 10.0
    sigma_heading_deg: float = 35.0
    min_speed_for_heading_mps: float = 2.0
    ambiguity_ratio: float = 0.5  # runner-up likelihood / best above this on another road
    max_candidates: int = 8


@dataclass(frozen=True)
class Candidate:
    edge_id: int  # global id
    fraction: float  # position along the edge, 0 at its start, 1 at its end
    distance_m: float
    heading_diff_deg: float | None
    score: float
    lon: float  # the snapped point
    lat: float
    way_id: int


@dataclass(frozen=True)
class Match:
    best: Candidate
    candidates: tuple[Candidate, ...]
    confidence: float
    ambiguous: bool

    @property
    def edge_id(self) -> int:
        return self.best.edge_id


@dataclass(frozen=True)
class Segments:
    """Every straight piece of every edge's geometry, in a local metric projection (cached per
    graph by :func:`segments`; also what ``models`` snaps trip records with)."""

    proj: LocalProjection
    edge: npt.NDArray[np.int64]  # local edge index per segment
    x0: npt.NDArray[np.float64]
    y0: npt.NDArray[np.float64]
    dx: npt.NDArray[np.float64]
    dy: npt.NDArray[np.float64]
    seg_len: npt.NDArray[np.float64]
    along0: npt.NDArray[np.float64]  # metres from edge start to segment start
    edge_len: npt.NDArray[np.float64]
    bearing: npt.NDArray[np.float64]
    grid: _Grid  # segments by the grid cells their bounding boxes touch


@dataclass(frozen=True)
class _Grid:
    """A uniform grid over segment bounding boxes (CSR: cell -> segment ids), pure numpy."""

    x_min: float
    y_min: float
    cell_m: float
    nx: int
    ny: int
    offsets: npt.NDArray[np.int64]
    items: npt.NDArray[np.int64]

    @staticmethod
    def build(
        xa: npt.NDArray[np.float64],
        ya: npt.NDArray[np.float64],
        xb: npt.NDArray[np.float64],
        yb: npt.NDArray[np.float64],
        cell_m: float = 100.0,
    ) -> _Grid:
        lo_x, hi_x = np.minimum(xa, xb), np.maximum(xa, xb)
        lo_y, hi_y = np.minimum(ya, yb), np.maximum(ya, yb)
        x_min, y_min = float(lo_x.min()), float(lo_y.min())
        nx = int((hi_x.max() - x_min) // cell_m) + 1
        ny = int((hi_y.max() - y_min) // cell_m) + 1
        cx0 = ((lo_x - x_min) // cell_m).astype(np.int64)
        cx1 = ((hi_x - x_min) // cell_m).astype(np.int64)
        cy0 = ((lo_y - y_min) // cell_m).astype(np.int64)
        cy1 = ((hi_y - y_min) // cell_m).astype(np.int64)
        wx, wy = cx1 - cx0 + 1, cy1 - cy0 + 1
        per = wx * wy
        seg = np.repeat(np.arange(xa.shape[0], dtype=np.int64), per)
        k = np.arange(int(per.sum()), dtype=np.int64) - np.repeat(np.cumsum(per) - per, per)
        cell = (np.repeat(cy0, per) + k // np.repeat(wx, per)) * nx + (
            np.repeat(cx0, per) + k % np.repeat(wx, per)
        )
        order = np.argsort(cell, kind="stable")
        counts = np.bincount(cell, minlength=nx * ny)
        offsets = np.zeros(nx * ny + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return _Grid(x_min, y_min, cell_m, nx, ny, offsets, seg[order])

    def query(self, x: float, y: float, r: float) -> npt.NDArray[np.int64]:
        """Ids of segments whose bounding box may lie within ``r`` of (x, y), sorted."""
        c = self.cell_m
        i0 = max(int((x - r - self.x_min) // c), 0)
        i1 = min(int((x + r - self.x_min) // c), self.nx - 1)
        j0 = max(int((y - r - self.y_min) // c), 0)
        j1 = min(int((y + r - self.y_min) // c), self.ny - 1)
        if i0 > i1 or j0 > j1:
            return np.zeros(0, dtype=np.int64)
        parts = [
            self.items[self.offsets[j * self.nx + i0] : self.offsets[j * self.nx + i1 + 1]]
            for j in range(j0, j1 + 1)
        ]
        a = np.sort(np.concatenate(parts))  # a segment spanning cells appears once per cell
        if a.size > 1:
            keep = np.empty(a.shape, dtype=bool)
            keep[0] = True
            np.not_equal(a[1:], a[:-1], out=keep[1:])
            a = a[keep]
        return a


_SEGMENT_CACHE: weakref.WeakKeyDictionary[Graph, Segments] = weakref.WeakKeyDictionary()


def segments(g: Graph) -> Segments:
    s = _SEGMENT_CACHE.get(g)
    if s is not None:
        return s
    pts = g.geom_lonlat
    proj = LocalProjection(float(pts[:, 0].mean()), float(pts[:, 1].mean()))
    x, y = proj.to_xy(pts[:, 0], pts[:, 1])
    counts = np.diff(g.geom_offsets) - 1
    edge = np.repeat(np.arange(g.n, dtype=np.int64), counts)
    # index of segment start points: all points except each edge's last
    last = np.zeros(pts.shape[0], dtype=bool)
    last[g.geom_offsets[1:] - 1] = True
    start_idx = np.flatnonzero(~last)
    x0, y0 = x[start_idx], y[start_idx]
    dx, dy = x[start_idx + 1] - x0, y[start_idx + 1] - y0
    seg_len = np.hypot(dx, dy)
    cum = np.cumsum(seg_len)
    edge_first = np.zeros(g.n, dtype=np.int64)
    np.cumsum(counts[:-1], out=edge_first[1:])
    before = np.concatenate([[0.0], cum])[edge_first]
    along0 = np.concatenate([[0.0], cum[:-1]]) - before[edge]
    edge_len = np.zeros(g.n)
    np.add.at(edge_len, edge, seg_len)
    bearing = bearing_deg(
        pts[start_idx, 0], pts[start_idx, 1], pts[start_idx + 1, 0], pts[start_idx + 1, 1]
    )
    grid = _Grid.build(x0, y0, x0 + dx, y0 + dy)
    s = Segments(proj, edge, x0, y0, dx, dy, seg_len, along0, edge_len, bearing, grid)
    _SEGMENT_CACHE[g] = s
    return s


def match_fix(
    g: Graph,
    lon: float,
    lat: float,
    heading_deg: float | None = None,
    speed_mps: float | None = None,
    config: MatchConfig = MatchConfig(),
    allowed: npt.NDArray[np.bool_] | None = None,
) -> Match:
    """Match one fix to the most likely directed edge of ``g``; raise NoMatchError if none."""
    if g.n == 0:
        raise NoMatchError("no road links loaded around the fix")
    s = segments(g)
    px, py = s.proj.to_xy(lon, lat)
    if not (np.isfinite(px) and np.isfinite(py)):
        raise NoMatchError("the fix has no finite position")
    near_idx = s.grid.query(float(px), float(py), config.radius_m)
    if allowed is not None:
        near_idx = near_idx[allowed[s.edge[near_idx]]]
    if near_idx.size == 0:
        raise NoMatchError(f"no road link within {config.radius_m:.0f} m of ({lon:.6f}, {lat:.6f})")
    x0, y0, dx, dy, sl = (a[near_idx] for a in (s.x0, s.y0, s.dx, s.dy, s.seg_len))
    # a zero-length segment has dx = dy = 0, so its numerator is 0 and t = 0
    t_near = ((px - x0) * dx + (py - y0) * dy) / np.maximum(sl * sl, 1e-12)
    t_near = np.minimum(np.maximum(t_near, 0.0), 1.0)
    cx_near = x0 + t_near * dx
    cy_near = y0 + t_near * dy
    d_near = np.hypot(px - cx_near, py - cy_near)
    keep = d_near <= config.radius_m
    near_idx = near_idx[keep]
    t_near, cx_near, cy_near, d_near = (a[keep] for a in (t_near, cx_near, cy_near, d_near))
    if near_idx.size == 0:
        raise NoMatchError(f"no road link within {config.radius_m:.0f} m of ({lon:.6f}, {lat:.6f})")
    # arrays below are indexed by position k in the candidate list; seg ids by near_idx[k]
    idx = near_idx
    score = (d_near / config.sigma_m) ** 2
    use_heading = (
        heading_deg is not None
        and speed_mps is not None
        and np.isfinite(heading_deg)
        and speed_mps >= config.min_speed_for_heading_mps
    )
    hdiff = (
        angle_diff_deg(s.bearing[idx], heading_deg)
        if use_heading and heading_deg is not None
        else None
    )
    if hdiff is not None:
        score = score + (hdiff / config.sigma_heading_deg) ** 2
    # best segment per edge
    edges = s.edge[idx]
    order = np.lexsort((score, edges))
    first = np.ones(order.shape[0], dtype=bool)
    first[1:] = edges[order][1:] != edges[order][:-1]
    best_seg = order[first]
    cand_order = best_seg[np.argsort(score[best_seg], kind="stable")][: config.max_candidates]
    k = cand_order
    e_loc = edges[k]
    seg = idx[k]
    along = s.along0[seg] + t_near[k] * s.seg_len[seg]
    elen = s.edge_len[e_loc]
    frac = np.minimum(np.maximum(along / np.maximum(elen, 1e-9), 0.0), 1.0)
    clon, clat = s.proj.to_lonlat(cx_near[k], cy_near[k])
    hd = hdiff[k].tolist() if hdiff is not None else [None] * len(k)
    sc = score[k]
    ways = g.way_id[e_loc]
    cands = [
        Candidate(
            edge_id=ei,
            fraction=fr,
            distance_m=dm,
            heading_diff_deg=h,
            score=sv,
            lon=lo,
            lat=la,
            way_id=wi,
        )
        for ei, fr, dm, h, sv, lo, la, wi in zip(
            g.edge_id[e_loc].tolist(),
            frac.tolist(),
            d_near[k].tolist(),
            hd,
            sc.tolist(),
            clon.tolist(),
            clat.tolist(),
            ways.tolist(),
            strict=True,
        )
    ]
    like = np.exp(-0.5 * (sc - sc[0]))
    confidence = float(like[0] / like.sum())
    best = cands[0]
    ambiguous = bool(np.any((ways[1:] != ways[0]) & (like[1:] >= config.ambiguity_ratio)))
    return Match(best=best, candidates=tuple(cands), confidence=confidence, ambiguous=ambiguous)
