"""The single entry point: every tick's inputs in, a validated route or a fallback out.

:func:`evaluate` is the pure decision (values in, a :class:`Verdict` out). :class:`SafetyGate`
wraps it for the agent: it never raises (anything unexpected becomes an ``INTERNAL_ERROR``
fallback, logged with its traceback), counts fallbacks by reason and logs each one.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np

from safety.config import SafetyConfig
from safety.data import check_bundle, check_demand
from safety.inputs import BusinessArea, TickInput
from safety.position import FixCheck, check_fix, check_match
from safety.reasons import Family, Reason, fallback_message, normalise_locale
from safety.route import I64, follow_the_road, hard_to_judge, judge_route, route_array
from safety.verdict import FRACTION_DECIMALS, Verdict
from tiles import Graph, Match, NoMatchError, match_fix

log = logging.getLogger(__name__)

_POSITION_UNUSABLE = frozenset(
    {Reason.GPS_MISSING, Reason.GPS_NAN, Reason.GPS_OUT_OF_RANGE, Reason.GPS_JUMP}
)


def _finite_or_none(v: object) -> float | None:
    if isinstance(v, bool | np.bool_):
        return None
    if isinstance(v, int | float | np.integer | np.floating) and math.isfinite(v):
        return float(v)
    return None


def _match(tick: TickInput, g: Graph, heading: float | None, cfg: SafetyConfig) -> Match | None:
    if tick.match is not None and (heading is None or tick.match.best.heading_diff_deg is not None):
        return tick.match
    # no match given, or one made without the direction the gate knows (derived or held): the
    # gate matches the fix itself with it
    fix = tick.fix
    assert fix is not None
    mc = cfg.match.matching
    speed = _finite_or_none(fix.speed_mps) or 0.0
    if heading is not None:
        speed = max(speed, mc.min_speed_for_heading_mps)
    try:
        return match_fix(g, float(fix.lon), float(fix.lat), heading, speed, mc)
    except NoMatchError:
        return None


def evaluate(
    tick: TickInput,
    config: SafetyConfig = SafetyConfig(),
    area: BusinessArea | None = None,
    locale: str = "ja",
) -> Verdict:
    """Check every input of one tick; pure, may raise on bugs (use :class:`SafetyGate`).

    In order: the bundle, the fix, the match, the demand, then the proposed route; the
    reasons keep that order (each once). No reason: the route (maybe trimmed) is validated;
    any reason: a fallback, with the road's continuation unless the position is in doubt."""
    loc = normalise_locale(locale)
    now = float(tick.now_s)
    mow = float(tick.minute_of_week)
    reasons: list[Reason] = []
    reasons += (
        check_bundle(tick.bundle, now)
        if (tick.bundle is not None or config.require_bundle_status)
        else ()
    )
    fc = check_fix(tick.fix, tick.previous_fix, now, area, config.gps, tick.last_moving_fix)
    reasons += fc.reasons
    m, match_reasons = _checked_match(tick, fc, config)
    reasons += match_reasons
    reasons += check_demand(
        tick.demand,
        tick.demand_table,
        mow if math.isfinite(mow) else 0.0,
        config.demand,
        required=config.require_demand,
    )
    proposed = route_array(tick.route)
    shown, trimmed, route_reasons = _checked_route(tick, m, proposed, mow, config, area)
    reasons += route_reasons
    unique = tuple(dict.fromkeys(reasons))
    fix = tick.fix
    ok = not unique
    route: tuple[int, ...] = ()
    if ok:
        assert shown is not None  # no ROUTE_MISSING: a route was proposed
        route = tuple(int(x) for x in shown)
    return Verdict(
        ok=ok,
        route=route,
        trimmed=trimmed if ok else (),
        reasons=unique,
        message="" if ok else fallback_message(unique, loc),
        locale=loc,
        continuation=() if ok else _continuation(tick, m, unique, mow, config),
        time_s=now,
        minute_of_week=mow,
        lon=_finite_or_none(fix.lon) if fix is not None else None,
        lat=_finite_or_none(fix.lat) if fix is not None else None,
        edge_id=m.best.edge_id if m is not None else None,
        fraction=m.best.fraction if m is not None else None,
        proposed=tuple(int(x) for x in proposed) if proposed is not None else (),
    )


def _checked_match(
    tick: TickInput, fc: FixCheck, config: SafetyConfig
) -> tuple[Match | None, list[Reason]]:
    """The match the route is judged from (None when there is no graph, the position is
    unusable or no link of the graph matches) and the reasons against it."""
    g = tick.graph
    if g is None:
        return None, [Reason.MATCH_NONE]
    if _POSITION_UNUSABLE.intersection(fc.reasons):
        return None, []
    m = _match(tick, g, fc.heading_deg, config)
    if m is None or int(g.local([m.best.edge_id])[0]) < 0:
        return None, [Reason.MATCH_NONE]
    return _as_logged(m), list(check_match(g, m, fc.heading_deg, config.match))


def _as_logged(m: Match) -> Match:
    """The match with its position on the link at the decimals the verdict's record keeps, so
    the gate judges from the very figure a replay or the SLO re-judges from (and the record
    reads the same on every CPU: the match's last bits follow numpy's SIMD loops)."""
    fraction = round(m.best.fraction, FRACTION_DECIMALS)
    return m if fraction == m.best.fraction else replace(m, best=replace(m.best, fraction=fraction))


def _checked_route(
    tick: TickInput,
    m: Match | None,
    proposed: I64 | None,
    mow: float,
    config: SafetyConfig,
    area: BusinessArea | None,
) -> tuple[I64 | None, tuple[Reason, ...], list[Reason]]:
    """What of the proposed route may be shown, the trimmed reasons (problems further ahead
    that only shorten it) and the reasons against it (see safety.route.judge_route)."""
    reasons: list[Reason] = []
    if proposed is None and tick.route is not None:
        reasons.append(Reason.ROUTE_UNKNOWN_LINK)
    elif proposed is None or proposed.size == 0:
        reasons.append(Reason.ROUTE_MISSING)
    if not math.isfinite(mow):
        reasons.append(Reason.ROUTE_CLOSED_WINDOW)  # no time: every window may be closed
    g = tick.graph
    shown = proposed
    trimmed: tuple[Reason, ...] = ()
    if g is None or m is None:
        return shown, trimmed, reasons
    if proposed is not None and proposed.size and math.isfinite(mow):
        mask = area.edge_mask(g) if area is not None else None
        j = judge_route(
            g,
            proposed,
            m.best.edge_id,
            m.best.fraction,
            mow,
            config.route,
            mask,
            monday=getattr(tick, "monday", None),
        )
        reasons += j.reasons
        trimmed = j.trimmed
        if trimmed:
            shown = proposed[: j.keep]
            if j.keep == 0 or not j.kept_length_m >= config.route.min_route_m:
                reasons += trimmed  # too little left to be worth showing
                trimmed = ()
    if hard_to_judge(g, m.best.edge_id, m.best.fraction, shown, config.route):
        reasons.append(Reason.HARD_TO_JUDGE_ROAD)
    return shown, trimmed, reasons


def _continuation(
    tick: TickInput, m: Match | None, unique: tuple[Reason, ...], mow: float, config: SafetyConfig
) -> tuple[int, ...]:
    """The fallback's "follow the road" links, none when the position itself is in doubt."""
    g = tick.graph
    if g is None or m is None or any(r.family in (Family.GPS, Family.MATCH) for r in unique):
        return ()
    return follow_the_road(
        g,
        m.best.edge_id,
        mow if math.isfinite(mow) else 0.0,
        config.route,
        monday=getattr(tick, "monday", None),
    )


class SafetyGate:
    """The agent's per-tick safety check. :meth:`check` always returns a :class:`Verdict`.

    Counters (``ticks``, ``validated``, ``fallbacks``, ``by_reason``) accumulate over the
    gate's life; :meth:`stats` gives them as a plain dict. Thread-safe.
    """

    def __init__(
        self,
        config: SafetyConfig = SafetyConfig(),
        *,
        area: BusinessArea | None = None,
        locale: str = "ja",
    ) -> None:
        self.config = config
        self.area = area
        self.locale = normalise_locale(locale)
        self.ticks = 0
        self.validated = 0
        self.fallbacks = 0
        self.by_reason: Counter[str] = Counter()
        self._lock = threading.Lock()

    def check(self, tick: TickInput, *, locale: str | None = None) -> Verdict:
        """Judge one tick. Never raises; a bug inside becomes an INTERNAL_ERROR fallback."""
        loc = self.locale if locale is None else normalise_locale(locale)
        try:
            verdict = evaluate(tick, self.config, self.area, loc)
        except Exception as e:  # the UI must never see an exception
            log.exception("safety check failed; falling back to 'follow the road'")
            verdict = _internal_error(tick, loc, e)
        self._count(verdict)
        return verdict

    def _count(self, v: Verdict) -> None:
        with self._lock:
            self.ticks += 1
            if v.ok:
                self.validated += 1
                return
            self.fallbacks += 1
            self.by_reason.update(v.codes)
        log.info(
            "safety fallback %s at t=%.3f (%s, %s) edge=%s",
            ",".join(v.codes),
            v.time_s,
            v.lon,
            v.lat,
            v.edge_id,
        )

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "ticks": self.ticks,
                "validated": self.validated,
                "fallbacks": self.fallbacks,
                "by_reason": dict(sorted(self.by_reason.items())),
            }


def _internal_error(tick: object, locale: str, e: BaseException) -> Verdict:
    """A fallback built from whatever of the tick is still readable (never raises)."""
    now = _finite_or_none(getattr(tick, "now_s", None))
    mow = _finite_or_none(getattr(tick, "minute_of_week", None))
    fix = getattr(tick, "fix", None)
    lon = _finite_or_none(getattr(fix, "lon", None))
    lat = _finite_or_none(getattr(fix, "lat", None))
    try:
        text = f"{type(e).__name__}: {e}"[:500]
    except Exception:  # a hostile __str__
        text = type(e).__name__
    reasons = (Reason.INTERNAL_ERROR,)
    return Verdict(
        ok=False,
        route=(),
        reasons=reasons,
        message=fallback_message(reasons, locale),
        locale=locale,
        continuation=(),
        time_s=now if now is not None else float("nan"),
        minute_of_week=mow if mow is not None else float("nan"),
        lon=lon,
        lat=lat,
        error=text,
    )
