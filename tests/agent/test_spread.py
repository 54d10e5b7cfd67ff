"""The route read-out's spread (issue 17, "Offline"; ``PlannerParams.route_spread_eps``): without
a live snapshot, each junction takes one of the successors within ``eps · |Q_best|`` of the best,
the one the cab's hash of (salt, successor, 10-minute period) ranks first. Margin 0 is
``argmax Q``; a choice is always near-best and allowed, and holds when another near successor
drops out; cabs with other salts take other streets; a live snapshot turns it off; the tick logs
the salt and replay recomputes the same bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.bundle import load_bundle
from agent.decide import TickInputs, decide
from agent.errors import ReplayError
from agent.gps import read_csv_trace
from agent.planner import (
    ROUTE_SPREAD_EPS,
    FleetView,
    PlannerParams,
    Spread,
    ValueTable,
    spread_of,
    spread_salt_of,
)
from agent.planner.fleet import LIVE, PRIOR
from agent.planner.readout import follow, spread_hash, spread_next, successor_values
from agent.tick_live import LiveInput
from tests.agent.test_live import AREA, FakeSnapshot
from tests.conftest import DRIVE_CSV, EVENING_MINUTE
from tools.field.replay import replay_tick

MINUTE = EVENING_MINUTE  # Tuesday 17:00: the minute of the session's tables


@pytest.fixture(scope="module")
def table(evening_tables: tuple[ValueTable, ValueTable]) -> ValueTable:
    """The Manhattan table of Tuesday 17:00 without passes: the session's (tests/conftest.py)."""
    return evening_tables[0]


def _starts(table: ValueTable, n: int = 30) -> list[int]:
    cruisable = np.flatnonzero(table.prep.cruisable)
    starts: list[int] = cruisable[:: max(cruisable.size // n, 1)].tolist()
    return starts


def _read(table: ValueTable, e: int, spread: Spread | None) -> list[int]:
    route: list[int] = follow(table, e, 0.0, 2000.0, 300.0, 400, max_visits=1, spread=spread)[0]
    return route


def test_margin_zero_is_argmax_and_salts_spread_the_cabs(table: ValueTable) -> None:
    moved = 0
    for e in _starts(table):
        plain = _read(table, e, None)
        assert _read(table, e, Spread(0.0, 12345)) == plain
        salts = [spread_salt_of(f"cab-{i}") for i in range(8)]
        routes = [tuple(_read(table, e, Spread(0.05, s))) for s in salts]
        assert routes == [tuple(_read(table, e, Spread(0.05, s))) for s in salts]  # pure
        moved += len(set(routes)) > 1
    assert moved >= 10  # of 30 starts, most junctions in Midtown have a near-best twin


def test_a_spread_choice_is_allowed_and_within_the_margin(table: ValueTable) -> None:
    prep = table.prep
    chose_other = 0
    for e in range(0, prep.n, 7):
        for t in (0.0, 600.0):
            scored = successor_values(table, e, t)
            best = max(scored, key=lambda fq: fq[1], default=None)
            for salt in range(6):
                f = spread_next(table, e, t, None, None, None, Spread(0.05, salt))
                if best is None:
                    assert f == -1
                    continue
                q = dict(scored)[f]
                assert q >= best[1] - 0.05 * abs(best[1])  # near-best, never a barred link
                assert table.allowed_at(table.start_minute_of_week + t / 60.0)[f]
                chose_other += q < best[1]
    assert chose_other > 0


def test_the_hash_is_per_salt_and_link() -> None:
    h = spread_hash(1, 2, 3)
    assert h == spread_hash(1, 2, 3) and 0 <= h < 2**64
    assert len({h, spread_hash(2, 2, 3), spread_hash(1, 7, 3), spread_hash(1, 2, 4)}) == 4
    salts = {spread_salt_of(f"cab-{i}") for i in range(1000)}
    assert len(salts) == 1000 and all(-(2**63) <= s < 2**63 for s in salts)
    with pytest.raises(ValueError, match="margin"):
        Spread(1.5, 0)
    with pytest.raises(ValueError, match="invalid planner parameters: route_spread_eps"):
        PlannerParams(route_spread_eps=-0.1)


def test_only_without_a_live_snapshot() -> None:
    on = PlannerParams(route_spread_eps=0.05)
    assert spread_of(on, None, 7) == Spread(0.05, 7)
    assert spread_of(on, FleetView(PRIOR), 7) == Spread(0.05, 7)
    assert spread_of(on, FleetView(LIVE), 7) is None  # the others' claims keep the cabs apart
    assert spread_of(on, None, None) is None  # no salt: argmax
    assert spread_of(PlannerParams(), None, 7) is None
    assert "route_spread_eps" not in PlannerParams().to_json()  # old plans keep their bytes
    assert on.to_json()["route_spread_eps"] == 0.05


def test_the_tick_logs_the_salt_and_replays_it(manhattan_bundle: Path) -> None:
    lb = load_bundle(manhattan_bundle)
    try:
        assert lb.planner.route_spread_eps == ROUTE_SPREAD_EPS  # the demo ships the margin
        fixes = read_csv_trace(DRIVE_CSV)
        f = fixes[40]
        salts = [spread_salt_of(f"cab-{i}") for i in range(12)]
        results = [
            decide(lb, TickInputs(f.time_s, f, None, "en", "interval", spread_salt=s))
            for s in salts
        ]
        for s, r in zip(salts, results, strict=True):
            rec = r.to_record(lb)
            assert rec["spread_salt"] == s and r.plan is not None
            assert r.plan.spread == Spread(ROUTE_SPREAD_EPS, s)
            assert b'"spread":{"eps":0.05,"salt":' in r.plan.to_json()
            rec["seq"] = 1
            assert replay_tick(rec, lb).identical
        assert len({r.plan.edges for r in results if r.plan is not None}) > 1
        # no salt (an old log): no spread, no key, the bytes of before
        plain = decide(lb, TickInputs(f.time_s, f, None, "en", "interval"))
        assert "spread_salt" not in plain.to_record(lb)
        assert plain.plan is not None and plain.plan.spread is None
        # a live snapshot: no spread, whatever the salt
        snap = FakeSnapshot(AREA, 9, f.time_s - 20.0, "cd" * 32, "", [], [])
        live = LiveInput(AREA, snap, age_s=20.0)
        r = decide(lb, TickInputs(f.time_s, f, None, "en", "interval", live=live, spread_salt=1))
        assert r.plan is not None and r.plan.spread is None
        bad = results[0].to_record(lb)
        bad["spread_salt"], bad["seq"] = "x", 2
        with pytest.raises(ReplayError, match="spread_salt"):
            replay_tick(bad, lb)
    finally:
        lb.close()


def test_the_pipeline_ships_the_margin() -> None:
    from tools.pipeline.steps_release import BundleParamsParams

    assert BundleParamsParams(timezone="America/New_York").route_spread_eps == ROUTE_SPREAD_EPS


def test_a_choice_holds_when_another_near_successor_drops_out(table: ValueTable) -> None:
    """Rendezvous hashing: barring a near-best successor the cab did not take (nor the best)
    leaves its choice as it was; with ``pick = near[h % len(near)]`` it would often move."""
    prep = table.prep
    checked = 0
    for e in range(prep.n):
        scored = successor_values(table, e, 0.0)
        if len(scored) < 3:
            continue
        best_f, best_q = max(scored, key=lambda fq: fq[1])
        near = [f for f, q in scored if q >= best_q - 0.05 * abs(best_q)]
        for salt in range(4):
            sp = Spread(0.05, salt)
            pick = spread_next(table, e, 0.0, None, None, None, sp)
            for f in near:
                if f not in (pick, best_f):
                    assert spread_next(table, e, 0.0, None, None, {f}, sp) == pick
                    checked += 1
    assert checked > 0
