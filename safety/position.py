"""Checks of where the cab is: the GPS fix, the step from the previous fix, the map match."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from safety.config import GpsConfig, MatchCheckConfig
from safety.inputs import BusinessArea, Fix
from safety.reasons import Reason
from tiles import Graph, Match
from tiles.geo import bearing_deg, haversine_m


@dataclass(frozen=True)
class FixCheck:
    """Result of :func:`check_fix`: reasons (empty when usable) and the direction of travel."""

    reasons: tuple[Reason, ...]
    heading_deg: float | None  # direction of travel, from ``heading_source``
    speed_mps: float | None
    heading_source: str = ""  # "gps", "previous_fix", "held" (last moving fix) or ""


def _num(value: object) -> float | None:
    """A float, or None when the value is not a number at all (str, object)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | np.floating | np.integer):
        return float(value)
    return None


def _finite(*values: object) -> list[float] | None:
    """The values as floats when every one is a finite number, else None."""
    out = [v for v in map(_num, values) if v is not None and math.isfinite(v)]
    return out if len(out) == len(values) else None


def check_fix(
    fix: Fix | None,
    previous: Fix | None,
    now_s: float,
    area: BusinessArea | None,
    cfg: GpsConfig,
    last_moving: Fix | None = None,
) -> FixCheck:
    """Validate one fix (and the jump from ``previous``) against the injected ``now_s``.

    The direction of travel is the receiver's heading when moving, else the bearing from the
    previous fix when the cab moved far enough, else (stopped) the heading of ``last_moving``
    when it is recent and taken where the cab still is.
    """
    if fix is None:
        return FixCheck((Reason.GPS_MISSING,), None, None)
    values = _fix_numbers(fix)
    if values is None:
        return FixCheck((Reason.GPS_NAN,), None, None)
    t, lon, lat, heading, speed, acc = values
    if (
        not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0)
        or (heading is not None and not 0.0 <= heading <= 360.0)
        or (speed is not None and not 0.0 <= speed <= cfg.max_speed_mps)
        or (acc is not None and acc < 0.0)
    ):
        return FixCheck((Reason.GPS_OUT_OF_RANGE,), None, None)
    now = _num(now_s)
    if now is None or not math.isfinite(now):
        return FixCheck((Reason.GPS_STALE,), None, None)
    reasons: list[Reason] = []
    if now - t > cfg.max_fix_age_s or t - now > cfg.max_future_skew_s:
        reasons.append(Reason.GPS_STALE)
    if acc is None or acc > cfg.max_accuracy_m:
        reasons.append(Reason.GPS_POOR_ACCURACY)
    if area is not None and not bool(area.contains(lon, lat)):
        reasons.append(Reason.GPS_OUTSIDE_AREA)
    jump, derived = _step_from_previous(previous, t, lon, lat, acc, cfg)
    if jump:
        reasons.append(Reason.GPS_JUMP)
    direction, source = _direction(heading, speed, derived, last_moving, t, lon, lat, cfg)
    if direction is None:
        reasons.append(Reason.GPS_NO_HEADING_LOW_SPEED)
    return FixCheck(tuple(reasons), direction, speed, source)


def _fix_numbers(
    fix: Fix,
) -> tuple[float, float, float, float | None, float | None, float | None] | None:
    """(time, lon, lat, heading, speed, accuracy) of the fix as floats, the optional ones
    None when absent (a NaN heading is "no heading", as receivers report it); None when any
    value is not a number or not finite."""
    t, lon, lat = _num(fix.time_s), _num(fix.lon), _num(fix.lat)
    optional = {
        "heading": fix.heading_deg,
        "speed": fix.speed_mps,
        "accuracy": fix.accuracy_m,
    }
    opt: dict[str, float | None] = {}
    bad_number = t is None or lon is None or lat is None
    for k, v in optional.items():
        if v is None:
            opt[k] = None
            continue
        n = _num(v)
        if n is None:
            bad_number = True
            opt[k] = None
        elif k == "heading" and math.isnan(n):
            opt[k] = None  # receivers report NaN for "no heading"
        else:
            opt[k] = n
    values = [x for x in (t, lon, lat, *opt.values()) if x is not None]
    if bad_number or not all(math.isfinite(x) for x in values):
        return None
    assert t is not None and lon is not None and lat is not None
    return t, lon, lat, opt["heading"], opt["speed"], opt["accuracy"]


def _step_from_previous(
    previous: Fix | None, t: float, lon: float, lat: float, acc: float | None, cfg: GpsConfig
) -> tuple[bool, float | None]:
    """Whether the step from a usable previous fix is a jump (faster than
    ``max_implied_speed_kph`` beyond both fixes' accuracy), and otherwise the bearing of the
    step when the cab moved far enough for it to be a direction (else None)."""
    prev = _usable_previous(previous, t, cfg)
    if prev is None:
        return False, None
    plon, plat, pt, pacc = prev
    dist = float(haversine_m(plon, plat, lon, lat))
    slack = (acc or 0.0) + pacc
    dt = t - pt
    moved = max(dist - slack, 0.0)
    if moved > 0.0 and (dt <= 0.0 or moved / dt * 3.6 > cfg.max_implied_speed_kph):
        return True, None
    if dist >= max(cfg.min_displacement_for_heading_m, slack) and dt > 0.0:
        return False, float(bearing_deg(plon, plat, lon, lat))
    return False, None


def _direction(
    heading: float | None,
    speed: float | None,
    derived: float | None,
    last_moving: Fix | None,
    t: float,
    lon: float,
    lat: float,
    cfg: GpsConfig,
) -> tuple[float | None, str]:
    """The direction of travel and its source (see :class:`FixCheck`): the receiver's
    heading when moving, else the bearing from the previous fix, else (stopped) the held
    heading of the last moving fix; (None, "") when none is known."""
    moving = speed is not None and speed >= cfg.min_speed_for_heading_mps
    if heading is not None and moving:
        return heading % 360.0, "gps"
    if derived is not None:
        return derived, "previous_fix"
    if moving:
        return None, ""
    direction = _held_heading(last_moving, t, lon, lat, cfg)
    # a heading the receiver still reports at crawling speed that disagrees with the held
    # one means the cab turned while crawling: the held heading is no longer its direction
    if (
        direction is not None
        and heading is not None
        and abs((heading - direction + 180.0) % 360.0 - 180.0) > cfg.held_heading_max_turn_deg
    ):
        direction = None
    return direction, "held" if direction is not None else ""


def _held_heading(
    last: Fix | None, t: float, lon: float, lat: float, cfg: GpsConfig
) -> float | None:
    """The heading of the last moving fix, if recent, moving, and taken where the cab is."""
    if last is None:
        return None
    vals = _finite(last.time_s, last.lon, last.lat, last.heading_deg, last.speed_mps)
    if vals is None:
        return None
    lt, llon, llat, lh, ls = vals
    if not (0.0 <= t - lt <= cfg.held_heading_max_age_s):
        return None
    if not (0.0 <= lh <= 360.0 and ls >= cfg.min_speed_for_heading_mps):
        return None
    if not (-180.0 <= llon <= 180.0 and -90.0 <= llat <= 90.0):
        return None
    if float(haversine_m(llon, llat, lon, lat)) > cfg.held_heading_max_distance_m:
        return None
    return lh % 360.0


def _usable_previous(
    previous: Fix | None, t: float, cfg: GpsConfig
) -> tuple[float, float, float, float] | None:
    """(lon, lat, time, accuracy) of a valid recent previous fix, else None."""
    if previous is None:
        return None
    acc = 0.0 if previous.accuracy_m is None else previous.accuracy_m
    vals = _finite(previous.lon, previous.lat, previous.time_s, acc)
    if vals is None:
        return None
    plon, plat, pt, pacc = vals
    if not (-180.0 <= plon <= 180.0 and -90.0 <= plat <= 90.0) or pacc < 0.0:
        return None
    if abs(t - pt) > cfg.jump_window_s:
        return None
    return plon, plat, pt, pacc


def path_confidence(
    g: Graph, m: Match, ambiguity_ratio: float, short_link_m: float = 0.0
) -> tuple[float, bool]:
    """(confidence, ambiguous) of a match, counting the links just before and after the best
    one in the same direction as agreeing with it (see :class:`MatchCheckConfig`), and, past
    a link of at most ``short_link_m`` metres that agrees, the links just before/after that
    one (:func:`_agreeing`)."""
    cands = m.candidates
    scores = np.array([c.score for c in cands], dtype=np.float64)
    like = np.exp(-0.5 * (scores - scores.min()))
    loc = g.local([c.edge_id for c in cands]).astype(np.int64)
    b = int(g.local([m.best.edge_id])[0])
    if b < 0 or (loc < 0).any():
        return 0.0, True
    agree = _agreeing(g, b, loc, short_link_m)
    conf = float(like[agree].sum() / like.sum())
    best_like = float(like[loc == b].max())
    ambiguous = bool((like[~agree] >= ambiguity_ratio * best_like).any())
    return conf, ambiguous


def _agreeing(
    g: Graph, b: int, loc: npt.NDArray[np.int64], short_link_m: float
) -> npt.NDArray[np.bool_]:
    """Which candidate links (local ``loc``) lie on the cab's way through the best one ``b``:
    ``b`` itself, a link from its end or into its start that is not back along it, and,
    through an agreeing link no longer than ``short_link_m`` (a junction that OSM splits
    into several nodes a few metres apart), the links after or before that one in the
    same way (never back along the link they follow)."""
    u, v = g.u_node[loc], g.v_node[loc]
    agree: npt.NDArray[np.bool_] = np.asarray(loc == b)
    # (node, the node the way came from) at the end of the agreeing chain, ahead and behind
    ahead = [(int(g.v_node[b]), int(g.u_node[b]))]
    behind = [(int(g.u_node[b]), int(g.v_node[b]))]
    while ahead or behind:
        nxt_ahead: list[tuple[int, int]] = []
        nxt_behind: list[tuple[int, int]] = []
        for node, came in ahead:
            hit = (u == node) & (v != came) & ~agree
            agree |= hit
            nxt_ahead += [
                (int(v[i]), node)
                for i in np.flatnonzero(hit).tolist()
                if float(g.length_m[loc[i]]) <= short_link_m
            ]
        for node, came in behind:
            hit = (v == node) & (u != came) & ~agree
            agree |= hit
            nxt_behind += [
                (int(u[i]), node)
                for i in np.flatnonzero(hit).tolist()
                if float(g.length_m[loc[i]]) <= short_link_m
            ]
        ahead, behind = nxt_ahead, nxt_behind
    return agree


def check_match(
    g: Graph, m: Match, fix_heading_deg: float | None, cfg: MatchCheckConfig
) -> tuple[Reason, ...]:
    """Reasons a match cannot be trusted (empty when it can)."""
    reasons: list[Reason] = []
    conf, ambiguous = path_confidence(g, m, cfg.ambiguity_ratio, cfg.short_link_m)
    low = conf < cfg.min_confidence or m.best.distance_m > cfg.max_distance_m
    if fix_heading_deg is not None:
        b = int(g.local([m.best.edge_id])[0])
        if b >= 0:
            link = _bearing_at(g, b, m.best.fraction)
            diff = abs((fix_heading_deg - link + 180.0) % 360.0 - 180.0)
            low = low or diff > cfg.max_heading_diff_deg
    if low:
        reasons.append(Reason.MATCH_LOW_CONFIDENCE)
    if ambiguous:
        reasons.append(Reason.MATCH_AMBIGUOUS)
    return tuple(reasons)


def _bearing_at(g: Graph, local: int, fraction: float) -> float:
    """Bearing of the link's geometry segment at ``fraction`` of its length."""
    geom = g.geometry(local)
    if geom.shape[0] < 2:
        return float(g.bearing_start[local])
    seg = np.hypot(
        np.diff(geom[:, 0]) * math.cos(math.radians(float(geom[0, 1]))), np.diff(geom[:, 1])
    )
    total = float(seg.sum())
    if total <= 0.0:
        return float(g.bearing_start[local])
    k = int(np.searchsorted(np.cumsum(seg), fraction * total, side="left"))
    k = min(k, geom.shape[0] - 2)
    return float(bearing_deg(geom[k, 0], geom[k, 1], geom[k + 1, 0], geom[k + 1, 1]))
