"""The entry point: validated routes, fallbacks, messages, counters, records, internal errors."""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import msgpack
import numpy as np
import pytest

from safety import (
    CHECKING_POSITION,
    FOLLOW_THE_ROAD,
    BundleStatus,
    Reason,
    SafetyGate,
    SafetyLogError,
    TickInput,
    Verdict,
)
from tiles import Graph
from tiles import tags as T

from .helpers import NOW_S, fake_table, fix_on, long_walk, ok_tick, tick_demand


def _good(g: Graph, seed: int = 0) -> TickInput:
    """A tick that passes: a clear position on an ordinary street, a legal route, demand."""
    rng = np.random.default_rng(seed)
    gate = SafetyGate()
    table = fake_table(g.n_edges_total)
    for _ in range(200):
        route = long_walk(g, rng, 12)
        a = int(g.local([route[0]])[0])
        if g.length_m[a] < 40:
            continue
        tick = ok_tick(g, a, route, demand=tick_demand(table, route, 600), table=table)
        if gate.check(tick).ok:
            return tick
    raise AssertionError("no validated tick found")


@pytest.mark.parametrize("area", ["manhattan", "shibuya"])
def test_a_good_tick_is_validated(area: str, request: pytest.FixtureRequest) -> None:
    g = request.getfixturevalue(area)
    tick = _good(g)
    v = SafetyGate().check(tick)
    assert v.ok and v.reasons == () and v.message == ""
    assert tick.route is not None  # ok_tick always gives a route
    assert v.route == tuple(tick.route)
    assert v.edge_id == tick.route[0]
    assert v.event() is None


def test_fallback_message_by_locale(manhattan: Graph) -> None:
    tick = _good(manhattan)
    stale = replace(tick, bundle=BundleStatus(present=True, expires_at_s=NOW_S - 1))
    ja = SafetyGate(locale="ja_JP.UTF-8").check(stale)
    en = SafetyGate(locale="en").check(stale)
    assert ja.message == "みちなりに走行してください" == FOLLOW_THE_ROAD["ja"]
    assert en.message == "Please follow the road"
    assert ja.reasons == en.reasons == (Reason.BUNDLE_EXPIRED,)
    # the road ahead is still drawn: the position is sure, only the data is not
    assert ja.continuation[0] == ja.edge_id and len(ja.continuation) >= 1
    gps = SafetyGate(locale="ja").check(replace(tick, fix=None))
    assert gps.message == CHECKING_POSITION["ja"]
    assert (
        SafetyGate().check(replace(tick, fix=None), locale="fr").message
        == (CHECKING_POSITION["en"])
    )


def test_every_fallback_is_counted_and_logged(
    manhattan: Graph, caplog: pytest.LogCaptureFixture
) -> None:
    tick = _good(manhattan)
    gate = SafetyGate()
    with caplog.at_level(logging.INFO, logger="safety.gate"):
        gate.check(tick)
        gate.check(replace(tick, fix=None))
        gate.check(replace(tick, route=[]))
        v = gate.check(replace(tick, bundle=BundleStatus(present=True, hash_ok=False)))
    s = gate.stats()
    assert s["ticks"] == 4 and s["validated"] == 1 and s["fallbacks"] == 3
    assert s["by_reason"]["GPS_MISSING"] == 1
    assert s["by_reason"]["ROUTE_MISSING"] == 1
    assert s["by_reason"]["BUNDLE_HASH"] == 1
    assert sum("safety fallback" in r.message for r in caplog.records) == 3
    ev = v.event()
    assert ev is not None
    assert ev["kind"] == "safety_fallback" and ev["reasons"] == ["BUNDLE_HASH"]
    assert tick.fix is not None and tick.route is not None  # ok_tick gives both
    assert ev["time_s"] == NOW_S and ev["lon"] == tick.fix.lon
    assert ev["edge_id"] == tick.route[0]


class _Exploding:
    """A graph whose every attribute access fails (a fake for a corrupted tile)."""

    def __getattr__(self, name: str) -> object:
        raise RuntimeError(f"tile corrupted reading {name}")


def test_internal_error_never_reaches_the_ui(
    manhattan: Graph, caplog: pytest.LogCaptureFixture
) -> None:
    tick = replace(_good(manhattan), graph=_Exploding())  # type: ignore[arg-type]  # a fake Graph
    gate = SafetyGate(locale="en")
    with caplog.at_level(logging.ERROR, logger="safety.gate"):
        v = gate.check(tick)
    assert not v.ok
    assert v.reasons == (Reason.INTERNAL_ERROR,)
    assert "RuntimeError" in v.error
    assert v.message == "Please follow the road"
    assert v.time_s == NOW_S
    assert gate.stats()["by_reason"] == {"INTERNAL_ERROR": 1}
    assert any(r.exc_info for r in caplog.records)
    # even a tick that is not a TickInput at all
    w = gate.check("not a tick")  # type: ignore[arg-type]  # not a TickInput on purpose
    assert w.reasons == (Reason.INTERNAL_ERROR,) and math.isnan(w.time_s)
    Verdict.from_record(msgpack.unpackb(msgpack.packb(w.to_record())))


def test_record_round_trip_through_msgpack(manhattan: Graph) -> None:
    tick = _good(manhattan)
    for t in (tick, replace(tick, fix=None), replace(tick, route=[10**9])):
        v = SafetyGate().check(t)
        raw = msgpack.unpackb(msgpack.packb(v.to_record(), use_bin_type=True), raw=False)
        assert raw["schema_version"] == 1 and raw["kind"] == "safety_verdict"
        back = Verdict.from_record(raw)
        assert back == v


def test_unknown_fields_and_codes_are_kept() -> None:
    rec = {
        "schema_version": 2,
        "kind": "safety_verdict",
        "ok": False,
        "route": [],
        "reasons": ["GPS_STALE", "FUTURE_CODE"],
        "time_s": 1.0,
        "minute_of_week": 2.0,
        "new_field": {"x": 1},
    }
    v = Verdict.from_record(rec)
    assert v.reasons == (Reason.GPS_STALE,) and v.unknown_reasons == ("FUTURE_CODE",)
    out = v.to_record()
    assert out["new_field"] == {"x": 1} and out["reasons"] == ["GPS_STALE", "FUTURE_CODE"]
    for bad in ({}, {"schema_version": 1}, {**rec, "ok": "yes"}, {**rec, "route": ["1"]}):
        with pytest.raises(SafetyLogError):
            Verdict.from_record(bad)


def test_route_onto_the_fdr_falls_back_and_keeps_the_road(manhattan: Graph) -> None:
    """A planner proposing an on-ramp: the driver hears "follow the road", and the continuation
    stays on city streets."""
    mw = manhattan.flags & T.FLAG_MOTORWAY != 0
    for a in np.flatnonzero(~mw & (manhattan.flags & T.CRUISE_FORBIDDEN == 0)):
        succ = manhattan.local(
            manhattan.turn_to[manhattan.turn_offsets[a] : manhattan.turn_offsets[a + 1]]
        )
        into = [int(b) for b in succ if b >= 0 and mw[b]]
        if into and manhattan.length_m[a] > 40:
            route = [int(manhattan.edge_id[a]), int(manhattan.edge_id[into[0]])]
            v = SafetyGate().check(ok_tick(manhattan, int(a), route, fraction=0.3))
            if v.edge_id != route[0]:
                continue
            assert not v.ok and Reason.ROUTE_FORBIDDEN_LINK in v.reasons
            cont = manhattan.local(list(v.continuation))
            if any(r.family in ("gps", "match") for r in v.reasons):
                assert v.continuation == ()
            else:
                assert v.continuation[0] == route[0]
                assert not (manhattan.flags[cont[1:]] & T.CRUISE_FORBIDDEN).any()
            return
    pytest.fail("no on-ramp found")


def test_hard_to_judge_current_link_gives_the_message_in_japanese(shibuya: Graph) -> None:
    complex_ = np.flatnonzero(
        (shibuya.flags & T.FLAG_COMPLEX != 0) & (shibuya.flags & T.CRUISE_FORBIDDEN == 0)
    )
    rng = np.random.default_rng(1)
    seen = 0
    for a in complex_:
        fix = fix_on(shibuya, int(a), 0.5)
        route = [int(shibuya.edge_id[a])]
        v = SafetyGate(locale="ja").check(ok_tick(shibuya, int(a), route, fix=fix))
        if v.edge_id == route[0]:
            assert Reason.HARD_TO_JUDGE_ROAD in v.reasons
            assert "みちなりに走行してください" in v.message
            seen += 1
    assert seen >= 3, rng
