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
class _Segments:
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


_SEGMENTS: weakref.WeakKeyDictionary[Graph, _Segments] = weakref.WeakKeyDictionary()


def _segments(g: Graph) -> _Segments:
    s = _SEGMENTS.get(g)
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
    s = _Segments(proj, edge, x0, y0, dx, dy, seg_len, along0, edge_len, bearing)
    _SEGMENTS[g] = s
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
    s = _segments(g)
    px, py = s.proj.to_xy(lon, lat)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = ((px - s.x0) * s.dx + (py - s.y0) * s.dy) / (s.seg_len**2)
    t = np.clip(np.nan_to_num(t, nan=0.0), 0.0, 1.0)
    cx = s.x0 + t * s.dx
    cy = s.y0 + t * s.dy
    d = np.hypot(px - cx, py - cy)
    near = d <= config.radius_m
    if allowed is not None:
        near &= allowed[s.edge]
    if not near.any():
        raise NoMatchError(f"no road link within {config.radius_m:.0f} m of ({lon:.6f}, {lat:.6f})")
    idx = np.flatnonzero(near)
    score = (d[idx] / config.sigma_m) ** 2
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
    cands: list[Candidate] = []
    for k in cand_order:
        e = int(edges[k])
        seg = idx[k]
        along = s.along0[seg] + t[seg] * s.seg_len[seg]
        frac = float(along / s.edge_len[e]) if s.edge_len[e] > 0 else 0.0
        clon, clat = s.proj.to_lonlat(cx[seg], cy[seg])
        cands.append(
            Candidate(
                edge_id=int(g.edge_id[e]),
                fraction=min(max(frac, 0.0), 1.0),
                distance_m=float(d[seg]),
                heading_diff_deg=float(hdiff[k]) if hdiff is not None else None,
                score=float(score[k]),
                lon=float(clon),
                lat=float(clat),
                way_id=int(g.way_id[e]),
            )
        )
    like = np.exp(-0.5 * (np.array([c.score for c in cands]) - cands[0].score))
    confidence = float(like[0] / like.sum())
    best = cands[0]
    ambiguous = any(
        c.way_id != best.way_id and like[i] >= config.ambiguity_ratio
        for i, c in enumerate(cands[1:], start=1)
    )
    return Match(best=best, candidates=tuple(cands), confidence=confidence, ambiguous=ambiguous)
