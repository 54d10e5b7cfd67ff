"""Invariants over generated inputs on both real extracts (Hypothesis), and a 10,000-input fuzz
run of the entry point: a response for every input, no exception, and no validated route that
contains a forbidden link (motorway, private, pier, closed, banned or missing turn)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safety import Reason, SafetyGate, TickInput, Verdict
from tiles import Graph, TileStore

from .fuzz import FIX_CORRUPTIONS, OTHER, ROUTE_KINDS, make_tick, prep
from .helpers import NOW_S, Oracle


def _banned(store: TileStore) -> list[tuple[int, int]]:
    """(from, to) pairs of the applied no_* turn restrictions (real, from OSM)."""
    return [
        (int(p[0]), int(p[1]))
        for r in store.restrictions()
        if str(r["status"]).startswith("applied") and str(r["kind"]).startswith("no_")
        for p in r["pairs"]
    ]


def _assert_sound(g: Graph, oracle: Oracle, tick: TickInput, v: object) -> None:
    assert isinstance(v, Verdict)
    if not v.ok:
        assert v.reasons and v.message and v.route == ()
        assert all(isinstance(r, Reason) for r in v.reasons)
        return
    assert v.reasons == () and v.message == ""
    route = list(v.route)
    assert route and v.edge_id is not None
    assert v.route == v.proposed[: len(v.route)]  # shown: the proposal or a prefix of it
    assert oracle.violations(route, v.edge_id, v.minute_of_week, v.fraction or 0.0) == []
    fix = tick.fix
    assert fix is not None
    assert all(math.isfinite(x) for x in (fix.lon, fix.lat, fix.time_s))
    assert NOW_S - fix.time_s <= 5.0 and fix.accuracy_m is not None and fix.accuracy_m <= 30.0
    assert tick.previous_fix is None  # every generated jump is caught
    assert len(route) <= 600


@pytest.fixture(scope="module")
def worlds(
    manhattan: Graph, shibuya: Graph, manhattan_store: TileStore
) -> dict[str, tuple[Graph, Oracle]]:
    banned = _banned(manhattan_store)
    prep(manhattan, banned)
    prep(shibuya, [])
    return {
        "manhattan": (
            manhattan,
            Oracle.from_restrictions(manhattan, manhattan_store.restrictions()),
        ),
        "shibuya": (shibuya, Oracle(shibuya, frozenset())),
    }


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(
    area=st.sampled_from(["manhattan", "shibuya"]),
    edge_frac=st.floats(0.0, 1.0, allow_nan=False),
    fraction=st.floats(0.0, 1.0, allow_nan=False),
    heading_noise=st.floats(-180.0, 180.0, allow_nan=False),
    minute=st.floats(0.0, 7 * 1440 - 1e-6, allow_nan=False),
    fix_kind=st.sampled_from(FIX_CORRUPTIONS),
    route_kind=st.sampled_from(ROUTE_KINDS),
    other=st.sampled_from(OTHER),
    seed=st.integers(0, 2**32 - 1),
)
def test_no_validated_route_contains_a_forbidden_link(
    worlds: dict[str, tuple[Graph, Oracle]],
    area: str,
    edge_frac: float,
    fraction: float,
    heading_noise: float,
    minute: float,
    fix_kind: str,
    route_kind: str,
    other: str,
    seed: int,
) -> None:
    g, oracle = worlds[area]
    rng = np.random.default_rng(seed)
    tick = make_tick(
        g,
        prep(g),
        rng,
        edge=min(int(edge_frac * g.n), g.n - 1),
        fraction=fraction,
        heading_noise_deg=heading_noise,
        minute_of_week=minute,
        fix_kind=fix_kind,
        route_kind=route_kind,
        other=other,
    )
    v = SafetyGate().check(tick)
    _assert_sound(g, oracle, tick, v)
    if fix_kind in {"nan_lon", "inf_lat", "out_of_range", "missing", "text"}:
        assert not v.ok
    if other != "none" and other != "no_table":
        assert not v.ok
    if route_kind in {"forbidden", "empty", "none", "garbage", "long"}:
        assert not v.ok


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    lon=st.one_of(st.floats(), st.none(), st.text(max_size=3), st.integers()),
    lat=st.one_of(st.floats(), st.none()),
    heading=st.one_of(st.floats(), st.none()),
    speed=st.one_of(st.floats(), st.none()),
    acc=st.one_of(st.floats(), st.none()),
    t=st.one_of(st.floats(), st.integers(-(2**70), 2**70)),
    now=st.floats(),
    minute=st.one_of(st.floats(), st.integers(-(2**40), 2**40)),
    route=st.one_of(
        st.none(),
        st.lists(st.integers(-(2**40), 2**40), max_size=20),
        st.lists(st.floats(), max_size=5),
        st.text(max_size=5),
    ),
)
def test_arbitrary_garbage_gets_a_response(
    lon: object,
    lat: object,
    heading: object,
    speed: object,
    acc: object,
    t: object,
    now: float,
    minute: object,
    route: object,
) -> None:
    from safety import Fix

    fix = Fix(t, lon, lat, heading, speed, acc)  # type: ignore[arg-type]  # garbage on purpose
    tick = TickInput(
        now_s=now,
        minute_of_week=minute,  # type: ignore[arg-type]  # garbage on purpose
        fix=fix,
        graph=None,
        route=route,  # type: ignore[arg-type]  # garbage on purpose
    )
    v = SafetyGate().check(tick)
    assert isinstance(v, Verdict) and not v.ok and v.message and v.reasons
    assert Reason.INTERNAL_ERROR not in v.reasons  # garbage is judged, not crashed on


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    area=st.sampled_from(["manhattan", "shibuya"]),
    edge_frac=st.floats(0.0, 1.0, allow_nan=False),
    fraction=st.floats(0.05, 0.95, allow_nan=False),
    minute=st.floats(0.0, 7 * 1440 - 1e-6, allow_nan=False),
    route_kind=st.sampled_from(
        ["legal", "from_next", "forbidden", "closed", "swap", "drop", "u_turn", "banned"]
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_clean_inputs_validated_routes_are_sound(
    worlds: dict[str, tuple[Graph, Oracle]],
    area: str,
    edge_frac: float,
    fraction: float,
    minute: float,
    route_kind: str,
    seed: int,
) -> None:
    """Clean GPS, bundle and demand, so the route checks decide: legal and mutated routes."""
    g, oracle = worlds[area]
    tick = make_tick(
        g,
        prep(g),
        np.random.default_rng(seed),
        edge=min(int(edge_frac * g.n), g.n - 1),
        fraction=fraction,
        heading_noise_deg=0.0,
        minute_of_week=minute,
        fix_kind="none",
        route_kind=route_kind,
        other="none",
    )
    v = SafetyGate().check(tick)
    _assert_sound(g, oracle, tick, v)
    if route_kind == "forbidden":
        assert not v.ok or len(v.route) < len(v.proposed)
    route = list(tick.route or [])
    if route_kind == "banned" and len(route) >= 2 and (route[0], route[1]) in oracle.banned_pairs:
        assert Reason.ROUTE_ILLEGAL_TURN in v.reasons or v.edge_id != route[0]


def test_fuzz_10000_inputs(worlds: dict[str, tuple[Graph, Oracle]]) -> None:
    """10,000 generated ticks (5,000 per extract), every corruption mixed in."""
    rng = np.random.default_rng(20261127)
    gate = SafetyGate()
    validated = 0
    for k in range(10_000):
        g, oracle = worlds["manhattan" if k % 2 == 0 else "shibuya"]
        tick = make_tick(g, prep(g), rng)
        v = gate.check(tick)
        _assert_sound(g, oracle, tick, v)
        validated += v.ok
    s = gate.stats()
    assert s["ticks"] == 10_000
    assert s["by_reason"].get("INTERNAL_ERROR", 0) == 0
    assert validated > 100  # the fuzz reaches the validated path, not only fallbacks
