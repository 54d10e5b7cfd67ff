"""The per-cab fleet view computed once per snapshot (issue 16, the simulator's speed):
:class:`agent.planner.fleet.SnapshotReadout` gives, for every cab, the table of
``with_fleet(table, fleet_view(...))`` bit for bit (``W``, ``P`` and the pass ages, and the
same ``None`` where the view has nothing), on the real Manhattan table with snapshots built
from heartbeats of vacant and occupied cabs whose routes overlap, for cabs with and without
their own heartbeat in the snapshot and with their own recent passes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.planner import (
    ValueTable,
    fleet_view,
    walk_c,
    with_fleet,
)
from agent.planner.cab_view import CabTable
from agent.planner.fleet import SnapshotReadout
from agent.planner.readout import _follow_py
from agent.planner.stability import _route_value_py
from sync.live import Heartbeat, Snapshot, build_snapshot
from tests.conftest import EVENING_MINUTE

MINUTE = EVENING_MINUTE  # Tuesday 17:00: the minute of the session's tables
BUILT_S = 1000.0


@pytest.fixture(scope="module")
def tables(evening_tables: tuple[ValueTable, ValueTable]) -> tuple[ValueTable, ValueTable]:
    """The Manhattan table without passes and with the passes of 300 links (some fresh): the
    session's (tests/conftest.py)."""
    return evening_tables


def _walk(table: ValueTable, rng: np.random.Generator, start: int, length: int) -> list[int]:
    prep = table.prep
    route, e = [], start
    for _ in range(length):
        succ = prep.arc_dst[int(prep.arc_offsets[e]) : int(prep.arc_offsets[e + 1])]
        if succ.size == 0:
            break
        e = int(succ[rng.integers(succ.size)])
        route.append(e)
    return route


def _snapshot(
    table: ValueTable, rng: np.random.Generator, cabs: int, hot: int
) -> tuple[Snapshot, list[Heartbeat]]:
    """Heartbeats of ``cabs`` cabs, most vacant, on ``hot`` links (so that links hold one cab,
    or several, and routes cross), and the snapshot built from them."""
    g = table.prep.graph
    starts = rng.choice(g.n, hot, replace=False)
    beats = []
    for _ in range(cabs):
        e = int(starts[rng.integers(hot)])
        route = _walk(table, rng, e, int(rng.integers(0, 30)))
        beats.append(
            Heartbeat(
                area="sim",
                t_s=int(BUILT_S),
                network=b"\0\0\0\0",
                link=int(g.edge_id[e]),
                lon=0.0,
                lat=0.0,
                vacant=bool(rng.random() < 0.8),
                route=tuple(int(x) for x in g.edge_id[route]),
            )
        )
    return build_snapshot(beats, BUILT_S, area="sim", version=1), beats


def _bits(x: float) -> int:
    return int(np.float64(x).view(np.int64))


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**32 - 1),
    with_passes=st.booleans(),
    cabs=st.sampled_from([1, 2, 5, 40, 400]),
    hot=st.sampled_from([1, 3, 50, 1000]),
    offset_s=st.floats(0.0, 120.0),
    later_s=st.floats(0.0, 90.0),
)
def test_the_snapshot_readout_is_with_fleet_of_fleet_view_bit_for_bit(
    tables: tuple[ValueTable, ValueTable],
    seed: int,
    with_passes: bool,
    cabs: int,
    hot: int,
    offset_s: float,
    later_s: float,
) -> None:
    table = tables[1] if with_passes else tables[0]
    g = table.prep.graph
    rng = np.random.default_rng(seed)
    snap, beats = _snapshot(table, rng, cabs, min(hot, g.n))
    readout = SnapshotReadout(table, snap)
    numpy_only = SnapshotReadout(table, snap)
    numpy_only._cab = None  # (as where the C walk is not built)
    now_s = BUILT_S + later_s
    for k in range(min(cabs, 12)):
        hb = beats[k]
        # the cab's own heartbeat (vacant: what it reported), or none (occupied then, or a cab
        # that sent none), with its own recent passes or none
        own_link, own_route = (hb.link, hb.route) if hb.vacant else (-1, ())
        if k % 4 == 3:
            own_link, own_route = -1, ()
        mine: dict[int, float] = {}  # the cab's own passes: link -> when
        if k % 3:
            for f in rng.choice(g.n, int(rng.integers(1, 70)), replace=False).tolist():
                mine[int(f)] = now_s - float(rng.uniform(0.0, 600.0))
        view = fleet_view(g, now_s=now_s, snapshot=snap, own_link=own_link, own_route=own_route)
        if mine:  # as the simulator read them: the lower of the two ages
            ages = np.full(g.n, np.inf) if view.seen_age_s is None else view.seen_age_s.copy()
            for f, t in mine.items():
                ages[f] = min(ages[f], now_s - t)
            view = dataclasses.replace(view, seen_age_s=ages)
        want = with_fleet(table, view, seen_offset_s=offset_s)
        got = readout.table_for(now_s, own_link, own_route, mine or None, seen_offset_s=offset_s)
        assert isinstance(got, CabTable) and got.overlay.addresses is not None  # (in C)
        # the C read-out on the overlay, before it is made whole: the dense view's walks
        start = int(rng.integers(g.n))
        _same_walks(got, want, start, offset_s + float(rng.uniform(0.0, 60.0)))
        for name in ("window_s", "pickup_prob", "pass_age_s"):
            assert _same(getattr(got, name), getattr(want, name)), name
        assert got.values is table.values  # the values are not solved again
        # where the C walk does not run, numpy makes the same overlay
        slow = numpy_only.table_for(now_s, own_link, own_route, mine or None, offset_s)
        assert isinstance(slow, CabTable) and slow.overlay.addresses is None
        _same_walks(slow, want, start, offset_s)
        for name in ("window_s", "pickup_prob", "pass_age_s"):
            assert _same(getattr(slow, name), getattr(want, name)), name


def _same_walks(view: ValueTable, dense: ValueTable, start: int, t0: float) -> None:
    """The route, its value and the kept route's check from ``start`` at ``t0`` on a cab's
    overlaid view and on the same view made whole, bit for bit."""
    for max_visits in (1, 2):
        got = walk_c.follow(view, start, t0, 2500.0, 0.0, 60, None, max_visits, ())
        want = walk_c.follow(dense, start, t0, 2500.0, 0.0, 60, None, max_visits, ())
        assert got is not None and want is not None
        assert got[0] == want[0] and got[1:] == want[1:]
        assert (
            want[0] == _follow_py(dense, start, t0, 2500.0, 0.0, 60, None, max_visits, (), None)[0]
        )
        if got[0]:
            a = walk_c.route_value(view, start, t0, got[0])
            b = walk_c.route_value(dense, start, t0, got[0])
            assert a is not None and b is not None and _bits(a) == _bits(b)
            assert _bits(a) == _bits(_route_value_py(dense, start, t0, got[0]))
            assert walk_c.enterable(view, start, t0, got[0]) is True


def test_a_cab_alone_on_its_link_and_route_reads_the_table_without_claims(
    tables: tuple[ValueTable, ValueTable],
) -> None:
    """The only vacant cab sees neither itself on its link nor its own route as claims."""
    table = tables[0]
    g = table.prep.graph
    route = _walk(table, np.random.default_rng(1), 7, 25)
    assert route
    hb = Heartbeat(
        area="sim",
        t_s=int(BUILT_S),
        network=b"\0\0\0\0",
        link=int(g.edge_id[7]),
        lon=0.0,
        lat=0.0,
        vacant=True,
        route=tuple(int(x) for x in g.edge_id[route]),
    )
    snap = build_snapshot([hb], BUILT_S, area="sim", version=1)
    readout = SnapshotReadout(table, snap)
    alone = readout.table_for(BUILT_S + 5.0, hb.link, hb.route)
    assert np.array_equal(alone.window_s, table.window_s)
    assert np.array_equal(alone.pickup_prob, table.pickup_prob)
    assert alone.pass_age_s is None  # no other cab seen, no pass of its own
    other = readout.table_for(BUILT_S + 5.0)  # another cab: this one's route claims its links
    assert bool(np.all(other.window_s[route] <= table.window_s[route]))
    assert bool(np.any(other.window_s[route] < table.window_s[route]))
    assert other.pass_age_s is not None and other.pass_age_s[7] == 5.0
    # its claims are the snapshot's, shared with every such cab: not written through one
    assert other.window_s is readout.table_for(BUILT_S + 9.0).window_s
    with pytest.raises(ValueError):
        other.window_s[route[0]] = 0.0
    with pytest.raises(ValueError):
        other.pickup_prob[0, route[0]] = 0.0
