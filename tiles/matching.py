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


class _SubsetIndex:
    """The segment index of a graph made by :meth:`Graph.subset` (a radius graph: a new one
    every plan), read from its parent's cached index instead of being rebuilt.

    Only the projection is the subset's own (the mean of its shape points, as
    :func:`segments` takes it); the parent's grid gives a superset of the segments near a fix,
    and every number :func:`match_fix` reads is computed for those segments alone with the
    same element-wise operations as :func:`segments`, so a match is bit-identical to one on
    ``segments(g)``. ``along0`` depends on a cumulative sum over the subset's segments, computed
    only when a candidate is not the first segment of its edge, and only through that edge."""

    def __init__(self, g: Graph, parent: Graph, idx: npt.NDArray[np.int64]) -> None:
        # the subset's arrays, not the graph: the cache is keyed weakly by the graph, and a
        # value that held it would keep it (and its parent) alive for ever
        self.geom_offsets = g.geom_offsets
        self.geom_lonlat = g.geom_lonlat
        self.parent = segments(parent)
        self.p_offsets = parent.geom_offsets
        self.idx = idx
        pts = g.geom_lonlat
        self.proj = LocalProjection(float(pts[:, 0].mean()), float(pts[:, 1].mean()))
        self._cum: npt.NDArray[np.float64] | None = None
        self._cum_edges = 0  # the edges whose segments ``_cum`` covers

    def near(
        self, lon: float, lat: float, r: float
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Sorted ids of (a superset of) the subset's segments within ``r`` of the point, their
        local edges and the parent's ids of the same segments."""
        ps = self.parent
        qx, qy = ps.proj.to_xy(lon, lat)
        # distances in the two projections differ by at most their x scales' ratio
        kx0, kx1 = float(ps.proj.kx), float(self.proj.kx)
        scale = max(kx0 / kx1, kx1 / kx0) * (1.0 + 1e-9)
        pseg = ps.grid.query(float(qx), float(qy), r * scale + 1e-3)
        pedge = ps.edge[pseg]
        pos = np.minimum(np.searchsorted(self.idx, pedge), max(self.idx.shape[0] - 1, 0))
        inside = self.idx[pos] == pedge if self.idx.shape[0] else np.zeros(0, dtype=bool)
        pseg, pedge, edge = pseg[inside], pedge[inside], pos[inside].astype(np.int64)
        # segment j of edge e starts at point j + e (each edge's last point starts none)
        seg = (self.geom_offsets[edge] - edge) + (pseg - (self.p_offsets[pedge] - pedge))
        return seg, edge, pseg

    def endpoints(
        self, seg: npt.NDArray[np.int64], edge: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.float64], ...]:
        """``x0, y0, dx, dy, seg_len`` of these segments (as :func:`segments` computes them)."""
        pts = self.geom_lonlat
        start = seg + edge
        xa, ya = self.proj.to_xy(pts[start, 0], pts[start, 1])
        xb, yb = self.proj.to_xy(pts[start + 1, 0], pts[start + 1, 1])
        dx, dy = xb - xa, yb - ya
        return xa, ya, dx, dy, np.hypot(dx, dy)

    def along0(
        self, seg: npt.NDArray[np.int64], edge: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float64]:
        first = self.geom_offsets[edge] - edge
        out = np.zeros(seg.shape[0], dtype=np.float64)
        later = seg != first
        if later.any():
            cum = self._cum_to(int(edge[later].max()))
            out[later] = cum[seg[later]] - cum[first[later]]
        return out

    def _cum_to(self, last_edge: int) -> npt.NDArray[np.float64]:
        """The running sum of the subset's segment lengths, ``cum[j]`` over its first ``j``
        segments, at least through the segments of edge ``last_edge``: only the shape points
        up to that edge's last are projected (a running sum's prefix is the same whatever
        follows it: ``np.cumsum`` adds in order), extended when a later call needs more."""
        if self._cum is not None and self._cum_edges > last_edge:
            return self._cum
        n_edges = last_edge + 1
        n_pts = int(self.geom_offsets[n_edges])
        pts = self.geom_lonlat[:n_pts]
        x, y = self.proj.to_xy(pts[:, 0], pts[:, 1])
        last = np.zeros(n_pts, dtype=bool)
        last[self.geom_offsets[1 : n_edges + 1] - 1] = True
        start_idx = np.flatnonzero(~last)
        # x[start + 1] - x[start] is np.diff's subtraction: one gather instead of two
        dx = np.diff(x)[start_idx]
        dy = np.diff(y)[start_idx]
        self._cum = np.concatenate([[0.0], np.cumsum(np.hypot(dx, dy))])
        self._cum_edges = n_edges
        return self._cum

    def edge_len(self, edge: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        counts = self.geom_offsets[edge + 1] - self.geom_offsets[edge] - 1
        first = self.geom_offsets[edge] - edge
        owner = np.repeat(np.arange(edge.shape[0], dtype=np.int64), counts)
        seg = _ranges(first, counts)
        *_, seg_len = self.endpoints(seg, edge[owner])
        out = np.zeros(edge.shape[0], dtype=np.float64)
        np.add.at(out, owner, seg_len)  # each edge's segments in order, as in segments()
        return out


def _ranges(starts: npt.NDArray[np.int64], counts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``concatenate([arange(s, s + c) for s, c in zip(starts, counts)])``."""
    total = int(counts.sum())
    ends = np.cumsum(counts)
    return np.asarray(
        np.arange(total, dtype=np.int64) + np.repeat(starts - (ends - counts), counts)
    )


_SUBSET_CACHE: weakref.WeakKeyDictionary[Graph, _SubsetIndex] = weakref.WeakKeyDictionary()


def _subset_index(g: Graph) -> _SubsetIndex | None:
    """The reusing index of a subset graph (None: use :func:`segments`)."""
    if g.subset_of is None or g in _SEGMENT_CACHE:
        return None
    hit = _SUBSET_CACHE.get(g)
    if hit is None:
        parent, idx = g.subset_of
        # a graph copied with other arrays (dataclasses.replace) would keep the link: use the
        # parent only if this really is its subset (same edges, same shape points)
        if not (
            idx.shape[0] == g.n
            and np.array_equal(parent.edge_id[idx], g.edge_id)
            and int((parent.geom_offsets[idx + 1] - parent.geom_offsets[idx]).sum())
            == g.geom_lonlat.shape[0]
        ):
            return None
        hit = _SubsetIndex(g, parent, idx)
        _SUBSET_CACHE[g] = hit
    return hit


def match_fix(
    g: Graph,
    lon: float,
    lat: float,
    heading_deg: float | None = None,
    speed_mps: float | None = None,
    config: MatchConfig = MatchConfig(),
    allowed: npt.NDArray[np.bool_] | None = None,
) -> Match:
    """Match one fix to the most likely directed edge of ``g``; raise NoMatchError if none.

    On a graph made by :meth:`Graph.subset` (the planner's radius graph) the parent's cached
    segment index is reused; the result is bit-identical to matching on ``segments(g)``.
    The steps: the segments within ``config.radius_m`` and their nearest points
    (:func:`_near_segments`), a score per segment from the distance and the heading, the best
    segment of each edge (:func:`_ranked`), the candidates (:func:`_candidates`)."""
    if g.n == 0:
        raise NoMatchError("no road links loaded around the fix")
    sub = _subset_index(g)
    s = segments(g) if sub is None else None
    near = _near_segments(sub, s, lon, lat, config, allowed)
    score = (near.d / config.sigma_m) ** 2
    use_heading = (
        heading_deg is not None
        and speed_mps is not None
        and np.isfinite(heading_deg)
        and speed_mps >= config.min_speed_for_heading_mps
    )
    hdiff = None
    if use_heading and heading_deg is not None:
        if near.pseg is not None and sub is not None:
            bearing = sub.parent.bearing[near.pseg]
        else:
            assert s is not None  # exactly one of sub and s is set
            bearing = s.bearing[near.idx]
        hdiff = angle_diff_deg(bearing, heading_deg)
    if hdiff is not None:
        score = score + (hdiff / config.sigma_heading_deg) ** 2
    k = _ranked(near.edge, score, config.max_candidates)
    cands, sc, ways = _candidates(g, sub, s, near, k, score, hdiff)
    like = np.exp(-0.5 * (sc - sc[0]))
    confidence = float(like[0] / like.sum())
    best = cands[0]
    ambiguous = bool(np.any((ways[1:] != ways[0]) & (like[1:] >= config.ambiguity_ratio)))
    return Match(best=best, candidates=tuple(cands), confidence=confidence, ambiguous=ambiguous)


@dataclass(frozen=True, eq=False)
class _Near:
    """The segments near a fix, by position in the candidate list: segment id ``idx`` (in
    ``segments(g)``) or ``pseg`` (in the parent's, on a subset), local edge, length, the
    fraction ``t`` along the segment of its nearest point ``(cx, cy)`` and the distance ``d``
    (metres, local projection)."""

    proj: LocalProjection
    idx: npt.NDArray[np.int64]
    edge: npt.NDArray[np.int64]
    pseg: npt.NDArray[np.int64] | None
    sl: npt.NDArray[np.float64]
    t: npt.NDArray[np.float64]
    cx: npt.NDArray[np.float64]
    cy: npt.NDArray[np.float64]
    d: npt.NDArray[np.float64]


def _near_segments(
    sub: _SubsetIndex | None,
    s: Segments | None,
    lon: float,
    lat: float,
    config: MatchConfig,
    allowed: npt.NDArray[np.bool_] | None,
) -> _Near:
    """The (``allowed``) segments within ``config.radius_m`` of the fix, projected on."""
    if sub is not None:
        proj = sub.proj
    else:
        assert s is not None  # exactly one of sub and s is set
        proj = s.proj
    px, py = proj.to_xy(lon, lat)
    if not (np.isfinite(px) and np.isfinite(py)):
        raise NoMatchError("the fix has no finite position")
    pseg: npt.NDArray[np.int64] | None = None
    if sub is not None:
        near_idx, near_edge, pseg = sub.near(lon, lat, config.radius_m)
    else:
        assert s is not None
        near_idx = s.grid.query(float(px), float(py), config.radius_m)
        near_edge = s.edge[near_idx]
    if allowed is not None:
        ok = allowed[near_edge]
        near_idx, near_edge = near_idx[ok], near_edge[ok]
        if pseg is not None:
            pseg = pseg[ok]
    if near_idx.size == 0:
        raise NoMatchError(f"no road link within {config.radius_m:.0f} m of ({lon:.6f}, {lat:.6f})")
    if sub is not None:
        x0, y0, dx, dy, sl = sub.endpoints(near_idx, near_edge)
    else:
        assert s is not None
        x0, y0, dx, dy, sl = (a[near_idx] for a in (s.x0, s.y0, s.dx, s.dy, s.seg_len))
    # a zero-length segment has dx = dy = 0, so its numerator is 0 and t = 0
    t_near = ((px - x0) * dx + (py - y0) * dy) / np.maximum(sl * sl, 1e-12)
    t_near = np.minimum(np.maximum(t_near, 0.0), 1.0)
    cx_near = x0 + t_near * dx
    cy_near = y0 + t_near * dy
    d_near = np.hypot(px - cx_near, py - cy_near)
    keep = d_near <= config.radius_m
    if pseg is not None:
        pseg = pseg[keep]
    if not np.any(keep):
        raise NoMatchError(f"no road link within {config.radius_m:.0f} m of ({lon:.6f}, {lat:.6f})")
    return _Near(
        proj,
        near_idx[keep],
        near_edge[keep],
        pseg,
        sl[keep],
        t_near[keep],
        cx_near[keep],
        cy_near[keep],
        d_near[keep],
    )


def _ranked(
    edges: npt.NDArray[np.int64], score: npt.NDArray[np.float64], max_candidates: int
) -> npt.NDArray[np.int64]:
    """Positions of the best-scoring segment of each edge, best first, at most
    ``max_candidates``."""
    order = np.lexsort((score, edges))
    first = np.ones(order.shape[0], dtype=bool)
    first[1:] = edges[order][1:] != edges[order][:-1]
    best_seg = order[first]
    ranked: npt.NDArray[np.int64] = best_seg[np.argsort(score[best_seg], kind="stable")][
        :max_candidates
    ]
    return ranked


def _candidates(
    g: Graph,
    sub: _SubsetIndex | None,
    s: Segments | None,
    near: _Near,
    k: npt.NDArray[np.int64],
    score: npt.NDArray[np.float64],
    hdiff: npt.NDArray[np.float64] | None,
) -> tuple[list[Candidate], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """The candidates at positions ``k``: where along its edge each nearest point lies, its
    position, score and way; with their scores and way ids as arrays."""
    e_loc = near.edge[k]
    seg = near.idx[k]
    if sub is not None:
        along = sub.along0(seg, e_loc) + near.t[k] * near.sl[k]
        elen = sub.edge_len(e_loc)
    else:
        assert s is not None
        along = s.along0[seg] + near.t[k] * near.sl[k]
        elen = s.edge_len[e_loc]
    frac = np.minimum(np.maximum(along / np.maximum(elen, 1e-9), 0.0), 1.0)
    clon, clat = near.proj.to_lonlat(near.cx[k], near.cy[k])
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
            near.d[k].tolist(),
            hd,
            sc.tolist(),
            clon.tolist(),
            clat.tolist(),
            ways.tolist(),
            strict=True,
        )
    ]
    return cands, sc, ways
