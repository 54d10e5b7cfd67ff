"""The live layer in the simulator's loop (tools.sim.live): cadence, delay, what a cab sees of
itself and of the others, and the supply prior of the reference fleet."""

from __future__ import annotations

import dataclasses
import gc

import numpy as np
import pytest

from agent.planner import fleet_view
from tests.tools.test_simulate import world  # noqa: F401  (the module fixture)
from tools.sim import collector, engine
from tools.sim.engine import run_shift
from tools.sim.live import HEARTBEAT_ROUTE_M, HEARTBEAT_S, SNAPSHOT_S, LiveLayer, supply_prior
from tools.sim.policies import Allowed, NagashiLivePolicy, make_policy
from tools.sim.world import World, make_passengers


def test_cadence_delay_and_own_heartbeat(world: World) -> None:  # noqa: F811
    live = LiveLayer(world, 3, seed=1)
    cruisable = np.flatnonzero(world.cruisable)
    a, b, c = (int(x) for x in cruisable[:3])
    route = [int(f) for f in world.succ[a]][:1]
    for k in range(5):
        t = k * HEARTBEAT_S
        live.tick(t, [a, b, c], [True, True, False], [route, [], [a]])
    # snapshots every 30 s (0, 30, 60), versions growing, sizes measured
    assert [s.version for _, s, _ in live.snapshots] == [1, 2, 3]
    assert len(live.bytes_sent) == 3 and min(live.bytes_sent) > 0
    snap = live.snapshots[-1][1]
    ids = world.graph.edge_id
    now, _ = snap.link_counts(ids[[a, b, c]])
    assert now.tolist() == [1, 1, 0]  # the occupied cab is not counted
    _, planned = snap.link_counts(ids[route])
    assert planned.tolist() == [1]  # cab 0's route; the occupied cab's route is not sent
    # a cab sees a snapshot only after its own fetch delay, at most a minute old
    for cab in range(3):
        d = float(live.delay_s[cab])
        assert 0.0 <= d < SNAPSHOT_S
        seen, own_link, own_route = live.seen_by(cab, 60.0 + d - 1e-6)
        assert seen is not None and seen.version == 2
        assert 60.0 + d - seen.built_s <= 2 * SNAPSHOT_S
    seen, own_link, own_route = live.seen_by(0, 200.0)
    assert seen is not None and seen.version == 3
    assert own_link == int(ids[a]) and list(own_route) == [int(ids[f]) for f in route]
    assert live.seen_by(2, 200.0)[1] == -1  # occupied: it reported no link to subtract
    # the cab's own view subtracts itself: cab 0 alone on its link sees no one there
    g = world.graph
    view = fleet_view(g, now_s=200.0, snapshot=seen, own_link=own_link, own_route=own_route)
    assert view.seen_age_s is None or not np.isfinite(view.seen_age_s[a])
    assert view.seen_age_s is not None and np.isfinite(view.seen_age_s[b])
    assert live.seen_by(0, -1.0) == (None, -1, ())


def test_each_heartbeat_carries_the_first_2_km_of_the_route_as_it_is_now(
    world: World,  # noqa: F811
) -> None:
    """The heartbeat's route against its definition at every heartbeat while the cab's route
    is driven (links popped in place), read again, changed in place at the same length, cut
    short, made a tuple, or its cab occupied (the route kept between heartbeats is reused
    only where it is the same)."""
    live = LiveLayer(world, 1, seed=3)
    rng = np.random.default_rng(5)
    cruisable = [int(x) for x in np.flatnonzero(world.cruisable)]
    length = np.asarray(world.length_m, dtype=np.float64)
    gid = world.graph.edge_id

    def want(route: list[int] | tuple[int, ...]) -> tuple[int, ...]:
        out, run = [], 0.0
        for f in route:
            out.append(int(gid[f]))
            run += float(length[f])
            if run >= HEARTBEAT_ROUTE_M:
                break
        return tuple(out)

    route: list[int] | tuple[int, ...] = [int(x) for x in rng.choice(cruisable, 60)]
    seen = 0
    for k in range(80):
        vacant = k % 13 != 7
        step = k % 6
        if step == 1 and isinstance(route, list) and route:
            route.pop(0)  # driven
        elif step == 2 and isinstance(route, list) and len(route) > 3:
            route[1] = int(rng.choice(cruisable))  # changed in place, the same length
        elif step == 3:
            route = [int(x) for x in rng.choice(cruisable, int(rng.integers(0, 40)))]
        elif step == 4:
            route = tuple(route)
        elif step == 5:
            route = list(route)[: int(rng.integers(0, 8))]  # short of 2 km, or empty
        live.tick(k * SNAPSHOT_S, [cruisable[0]], [vacant], [route])  # (each one read)
        hb = live.latest[0]
        assert hb is not None
        assert hb.route == (want(route) if vacant else ())
        seen += bool(hb.route)
    assert seen > 40


def test_a_fleet_on_the_live_layer_runs_it_in_the_loop(world: World) -> None:  # noqa: F811
    w = dataclasses.replace(world, config=dataclasses.replace(world.config, test_taxis=10))
    pax = make_passengers(w, 0, 10.0)
    allowed = Allowed(w)
    pol = make_policy("nagashi-live", w, allowed, 0, 10.0, n_cabs=10)
    assert isinstance(pol, NagashiLivePolicy) and pol.live is not None
    off = make_policy("nagashi-offline", w, allowed, 0, 10.0, n_cabs=10)
    assert off.live is None
    run = run_shift(w, pax, "nagashi-live", 0, 10.0)
    assert run.test_taxis == 10 and run.revenue_per_h >= 0.0
    # the run is repeatable with the live layer in it
    again = run_shift(w, pax, "nagashi-live", 0, 10.0)
    assert again.metrics() == run.metrics()


def test_a_shift_holds_the_collector_back_and_gives_it_back(world: World) -> None:  # noqa: F811
    """During a shift (and the supply prior's shift inside it) the objects alive before it are
    frozen and the youngest generation is collected rarely; after it both are as they were,
    and the run is the same as one under the collector's defaults."""
    w = dataclasses.replace(world, config=dataclasses.replace(world.config, test_taxis=6))
    pax = make_passengers(w, 1, 10.0)
    seen: list[tuple[tuple[int, int, int], int]] = []
    real = engine._Shift.run

    def spy(self: engine._Shift) -> None:
        seen.append((gc.get_threshold(), gc.get_freeze_count()))
        real(self)

    before = (gc.get_threshold(), gc.get_freeze_count())
    try:
        engine._Shift.run = spy  # type: ignore[method-assign]
        run = run_shift(w, pax, "nagashi-live", 0, 10.0)  # (its supply prior: a shift inside)
    finally:
        engine._Shift.run = real  # type: ignore[method-assign]
    assert len(seen) >= 2
    assert all(t[0] == collector.SHIFT_GC_GEN0 and frozen > 0 for t, frozen in seen)
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
    kept = collector.SHIFT_GC_GEN0
    try:
        collector.SHIFT_GC_GEN0 = gc.get_threshold()[0]  # (the collector's own threshold)
        assert run_shift(w, pax, "nagashi-live", 0, 10.0).metrics() == run.metrics()
    finally:
        collector.SHIFT_GC_GEN0 = kept


def test_supply_prior_is_the_reference_fleets_passes(world: World) -> None:  # noqa: F811
    prior = supply_prior(world, multiplier=10.0)
    assert supply_prior(world, multiplier=10.0) is prior  # measured once per world
    rates = prior.rates(world.graph.edge_id, world.config.start_minute_of_week)
    assert rates.shape == (world.n,) and np.all(rates >= 0) and rates.sum() > 0
    assert not np.any(rates[~world.cruisable])  # no cab passes a link it may not enter
    # the passes of one whole-fleet run, per hour: the prior's total over the shift
    passes: list[tuple[float, int]] = []
    pax = make_passengers(world, 0x5AFE, 10.0)
    cfg = world.config
    run_shift(world, pax, cfg.calibrate_with, 0x5AFE, 10.0, test_taxis=cfg.taxis, passes=passes)
    # the shift (18:00-19:00) is two whole slots, each observed for half an hour
    assert np.count_nonzero(prior.passes_per_h.sum(axis=1)) == 2
    assert float(prior.passes_per_h.sum(dtype=np.float64)) * 0.5 == pytest.approx(
        len(passes), rel=1e-6
    )
