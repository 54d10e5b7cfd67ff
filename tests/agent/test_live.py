"""The cab uses the fleet's live layer (issue 17): the agent's heartbeat and snapshot threads
against a real fleet server on loopback, the tick's FleetView and its record, replay from the
snapshot archive, and the faults (server down, expired, forged, replayed, a cab clock off by
minutes): guidance continues, the reason is logged, nothing crashes."""

from __future__ import annotations

import dataclasses
import itertools
import shutil
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgpack
import numpy as np
import numpy.typing as npt
import pytest
from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]  # not in its __all__

from agent.bundle import LoadedBundle, load_bundle
from agent.clock import ManualClock, SystemClock
from agent.decide import LIVE_NO_SNAPSHOT, LiveInput, TickInputs, decide
from agent.gps import Fix, TraceReplay, read_csv_trace
from agent.live import route_ahead
from agent.runtime import Agent, AgentConfig, SyncSettings
from agent.triplog import read_records
from sync import Bundle, BundleStore, FleetRepository, PullConfig, Updater
from sync._live_server import LiveConfig, LiveService
from sync._serve_limits import ServeLimits
from sync.live import (
    LIVE_BAD_SIGNATURE,
    LIVE_EXPIRED,
    LIVE_NOT_YET_VALID,
    LIVE_STALE_VERSION,
    LIVE_UNREACHABLE,
    PICKUP,
    HeartbeatClient,
    SnapshotClient,
    TrustSource,
    build_snapshot,
    encode_body,
    open_envelope,
    sign_envelope,
)
from sync.logstore import SqliteLogStorage
from sync.server import ServerConfig, create_app
from tests.conftest import DRIVE_CSV
from tests.sync.conftest import accept_all, run_server, utcnow
from tools.cli import main
from tools.field.replay import replay_log

AREA = "manhattan"
FAST = 0.05  # heartbeat and snapshot periods in these tests (seconds)


@dataclass
class Fleet:
    root: Path
    repo: FleetRepository
    device: Path  # the cab's bundle store, pulled once (its TUF metadata trusts the live key)
    trusted: Path
    tokens: dict[str, str]
    network: str


@pytest.fixture(scope="module")
def fleet(manhattan_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    work = tmp_path_factory.mktemp("live-agent")
    repo = FleetRepository(work / "fleet")
    repo.init(utcnow())
    repo.publish(Bundle(manhattan_bundle).path, AREA, utcnow())
    trusted = work / "root.json"
    trusted.write_bytes(repo.trusted_root_path().read_bytes())
    storage = SqliteLogStorage(repo.root / "fleet.sqlite")
    tokens = {v: storage.add_token("vehicle", v, 0.0) for v in ("cab-3", "cab-9")}
    storage.close()
    device = work / "device"
    with _serve(repo.root) as (url, _):
        u = Updater(
            BundleStore(device),
            PullConfig(url, AREA),
            trusted.read_bytes(),
            health_check=accept_all,
        )
        u.pull()
        u.close()
    lb = load_bundle(manhattan_bundle)
    net = lb.demand.network_sha256
    lb.close()
    return Fleet(repo.root, repo, device, trusted, tokens, net)


@contextmanager
def _serve(root: Path) -> Iterator[tuple[str, LiveService]]:
    """A fresh fleet server (its live state starts empty) on loopback; snapshots are built
    when a test says so. The server's background build runs once, started by the first live
    request, then sleeps an hour: it is started and waited for here, before the test, so it
    never lands just after a snapshot the test built (and supersedes it before a cab saw it)."""
    storage = SqliteLogStorage(root / "fleet.sqlite")
    token = storage.add_token("engineer", "test-live", time.time())  # a reader of snapshots
    # the cabs here talk every FAST seconds: far above a real cab's rate, so the per-token rate
    # limit (5/s, burst 100, which a long run under load exhausts) is raised
    limits = ServeLimits(token_rate_per_s=10_000.0, token_burst=100_000)
    app = create_app(root, ServerConfig(limits=limits), storage=storage)
    live: LiveService = app.state.live
    live.config = LiveConfig(build_every_s=3600)
    try:
        with run_server(app) as url:
            r = httpx.get(
                f"{url}/v1/live/snapshot",
                params={"area": AREA},
                headers={"authorization": f"Bearer {token}"},
            )
            assert r.status_code in (200, 503), r.text  # 503: none built yet
            _wait_for(lambda: live.current(AREA) is not None, "the server's first build")
            yield url, live
    finally:
        storage.close()


class ShiftedClock(SystemClock):
    """The cab's wall clock, off by ``offset_s`` (a cab whose clock is wrong)."""

    offset_s = 0.0

    def now(self) -> float:
        return time.time() + self.offset_s


def _wait_for(cond: Callable[[], bool], what: str, limit_s: float = 30.0) -> None:
    end = time.monotonic() + limit_s
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def _live_status(agent: Agent) -> dict[str, Any]:
    st: dict[str, Any] = agent.sync_status()["live"]
    return st


def _outcome(agent: Agent, key: str) -> int:
    return int(_live_status(agent)["snapshot"].get("outcomes", {}).get(key, 0))


def _drive(
    fleet: Fleet,
    tmp_path: Path,
    url: str,
    holds: dict[int, Callable[[Agent], None]],
    *,
    n_fixes: int,
    clock: SystemClock | None = None,
) -> tuple[Agent, list[dict[str, Any]], list[int]]:
    """The first ``n_fixes`` of the Midtown drive through a real agent syncing with ``url``;
    at fix ``i`` the drive holds while ``holds[i](agent)`` runs (the agent's threads go on).
    Returns the agent, its tick records and the number of ticks made before each hold."""
    agent: Agent
    marks: list[int] = []

    class HeldReplay(TraceReplay):
        def fixes(self) -> Iterator[Fix | None]:
            for i, f in enumerate(super().fixes()):
                if i in holds:
                    marks.append(agent.summary.ticks)
                    holds[i](agent)
                yield f

    sync = SyncSettings(
        url,
        token=fleet.tokens["cab-3"],
        area=AREA,
        trusted_root=fleet.trusted,
        pull_interval_s=3600.0,
        upload_interval_s=3600.0,
        retry_max_s=3600.0,
        shutdown_flush_attempts=1,
        heartbeat_interval_s=FAST,
        snapshot_interval_s=FAST,
    )
    agent = Agent(
        AgentConfig(
            bundle_dir=fleet.device, data_dir=tmp_path / "data", vehicle_id="cab-3", sync=sync
        ),
        HeldReplay(read_csv_trace(DRIVE_CSV)[:n_fixes], ManualClock(), speed=1.0),
        clock or SystemClock(),
    )
    agent.run()
    ticks = [r for r in read_records(tmp_path / "data" / "trips") if r["kind"] == "tick"]
    assert len(ticks) == agent.summary.ticks
    return agent, ticks, marks


def _phases(ticks: list[dict[str, Any]], marks: list[int]) -> list[list[dict[str, Any]]]:
    """The tick records between consecutive holds (the first list: before the first hold)."""
    bounds = [0, *marks, len(ticks)]
    return [ticks[a:b] for a, b in itertools.pairwise(bounds)]


def _unaffected(lb: LoadedBundle, ticks: list[dict[str, Any]]) -> None:
    """The tablet shows what it would have shown without the live layer (no other cab was
    on the road: this cab's own heartbeat is not counted against it). A tick that had a
    snapshot read out ``argmax Q``; without one the read-out spreads (``route_spread_eps``), so
    it is compared with the same tick replayed without the cab's spread salt."""
    from tools.field.replay import replay_tick

    for t in ticks:
        alone = dict(t, live=None)
        if (alone.pop("fleet") or {}).get("source") == "live":
            alone.pop("spread_salt", None)
        r = replay_tick(alone, lb)
        assert "instruction" not in r.differing and "plan" not in r.differing, r.to_json()


# ====================================================================== the test server
def test_a_served_fleet_builds_only_the_snapshots_a_test_builds(fleet: Fleet) -> None:
    """The server's background build runs once, started by the first live request, and then
    sleeps (``build_every_s``, 3600 s here): :func:`_serve` makes that request and waits for
    that build, so a snapshot a test builds is the newest until it builds another. (Left to
    the cab's first request, the background build could land just after the test's own and
    supersede it before the cab fetched it: the fault test's wait for its good snapshot,
    ``version == v``, then never ended.)"""
    with _serve(fleet.root) as (url, live):
        assert len(live.builds_s) == 1 and live.current(AREA) is not None  # done, served
        v = _rebuild(live)
        cab = SnapshotClient(
            url,
            AREA,
            fleet.tokens["cab-3"],
            TrustSource(BundleStore(fleet.device).tuf_dir),
            network=fleet.network,
        )
        try:
            got = cab.fetch()
        finally:
            cab.close()
        assert (got.status, got.version) == ("accepted", v), got
        assert len(live.builds_s) == 2  # the test's one only


# ====================================================================== end to end
def test_the_tick_plans_with_the_other_cabs_route(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One agent and a second cab (heartbeats sent by the test) on one server: the agent's
    tick record shows a live FleetView whose claims come from the other cab's route, never
    from its own; replay takes the snapshots back from the archive, bit for bit."""
    other: dict[str, Any] = {}
    with _serve(fleet.root) as (url, live):

        def own_only(agent: Agent) -> None:  # a snapshot that counts only this cab
            _wait_for(lambda: _live_status(agent)["heartbeats"].get("accepted", 0) > 0, "hb")
            time.sleep(3 * FAST)
            v = live.rebuild()[AREA]
            _wait_for(lambda: _live_status(agent)["snapshot"]["version"] == v, "snapshot")

        def other_cab(agent: Agent) -> None:  # cab-9 plans to drive this cab's route
            ins, _, _, _ = agent.state.snapshot()
            assert ins.kind == "route" and len(ins.route_edges) > 2
            route = [int(e) for e in ins.route_edges[1:]]
            hc = HeartbeatClient(url, fleet.tokens["cab-9"], AREA, fleet.network)
            fix = agent._last_fix
            assert fix is not None  # the drive is under way
            res = hc.send(
                t_s=time.time(), link=route[-1], lon=fix.lon, lat=fix.lat, vacant=True, route=route
            )
            hc.close()
            assert res.status == "accepted", res
            other["route"] = route
            v = live.rebuild()[AREA]
            _wait_for(lambda: _live_status(agent)["snapshot"]["version"] == v, "snapshot 2")

        def meter(agent: Agent) -> None:  # the meter, between two ticks (fixes 40 and 45)
            agent.meter(True)

        def pickup(agent: Agent) -> None:  # the pickup reaches the server's cells: with a
            # heartbeat about a position after it (the tick at fix 45), not an older one
            _wait_for(lambda: _live_status(agent)["events_acked"] >= 1, "pickup acked")
            live.rebuild()
            cur = live.current(AREA)
            assert cur is not None
            body, _ = open_envelope(cur[1])
            doc = msgpack.unpackb(zlib.decompress(body))
            assert np.frombuffer(doc["pickups"], "<u2").reshape(-1, 3).sum(axis=0).tolist() == [
                1,
                1,
                1,
            ]

        agent, ticks, marks = _drive(
            fleet, tmp_path, url, {12: own_only, 27: other_cab, 42: meter, 47: pickup}, n_fixes=50
        )
    phases = _phases(ticks, marks)
    alone, mine, shared = phases[1], phases[2], phases[3] + phases[4]
    assert alone and mine
    for t in alone:  # only this cab in the snapshot: nothing of the fleet to plan around
        assert t["live"]["version"] is not None and t["live"]["reason"] == ""
        assert t["live"]["own_link"] >= 0 and t["live"]["own_route"]
        assert t["fleet"]["source"] == "live" and t["fleet"]["claims_per_h_total"] is None
        assert t["fleet"]["links_seen"] == 0
    first = mine[0]
    assert first["fleet"]["source"] == "live"
    assert first["fleet"]["snapshot_version"] == first["live"]["version"]
    assert first["fleet"]["snapshot_version"] > alone[0]["live"]["version"]
    assert (first["fleet"]["claims_per_h_total"] or 0) > 0, first["fleet"]
    assert set(first["live"]["own_route"]) & set(other["route"])  # the same road, seen once
    assert all(t["instruction"]["kind"] in ("route", "fallback") for t in shared)
    st = _live_status(agent)
    assert st["unexpected_errors"] == 0 and st["heartbeats"]["accepted"] > 0
    # replay: the snapshots from the archive beside the trip logs, bit for bit
    data = tmp_path / "data"
    results = list(replay_log(data / "trips", fleet.device))
    assert [r.to_json() for r in results if not r.identical] == []
    # without the archive: the ticks that used a snapshot say so, the others still replay
    shutil.move(data / "live", tmp_path / "elsewhere")
    results = list(replay_log(data / "trips", fleet.device))
    missing = [r for r in results if r.snapshot_missing]
    used = [t for t in ticks if t["live"]["version"] is not None]
    assert len(missing) == len(used) > 0
    assert all("not in the archive" in r.snapshot_missing for r in missing)
    assert all(r.identical for r in results if not r.snapshot_missing)
    again = list(replay_log(data / "trips", fleet.device, snapshots=[tmp_path / "elsewhere"]))
    assert all(r.identical for r in again)
    # the command: one line per tick it could not replay, exit status 1; 0 with the archive
    capsys.readouterr()
    argv = ["replay", "--log", str(data), "--bundle-dir", str(fleet.device)]
    assert main(argv) == 1
    out = capsys.readouterr().out.splitlines()
    assert sum("NOT REPLAYED, live snapshot manhattan v" in x for x in out) == len(used)
    assert out[-1].endswith(f"{len(used)} not replayed (live snapshot missing)")
    assert "DIFFERS" not in "\n".join(out)
    assert main([*argv, "--snapshots", str(tmp_path / "elsewhere")]) == 0
    assert capsys.readouterr().out.strip().endswith("all byte-identical")


# ====================================================================== faults
def _signed(
    repo: FleetRepository, network: str, version: int, built_s: float, signer: Any = None
) -> bytes:
    s = build_snapshot([], built_s, area=AREA, network=network, version=version)
    return sign_envelope(encode_body(s), [signer or repo.live_signer()])


def _rebuild(live: LiveService) -> int:
    """Build the area's snapshot and wait until the server serves it: versions follow the
    clock in whole seconds, and a forged one served by :func:`_serve_instead` bumped the
    served version, so a rebuild in the same second may not replace it yet."""
    end = time.monotonic() + 30.0
    while True:
        v = live.rebuild()[AREA]
        with live._lock:
            if live._areas[AREA].version == v:
                return v
        assert time.monotonic() < end, "the rebuilt snapshot is never served"
        time.sleep(0.25)


def _serve_instead(live: LiveService, data: bytes) -> None:
    """The server hands out ``data`` as its area's snapshot (a forger, a replay, ...)."""
    with live._lock:
        live._areas[AREA].signed = data
        live._areas[AREA].version += 1


def test_refused_snapshots_and_a_wrong_clock_never_stop_guidance(
    fleet: Fleet, tmp_path: Path, manhattan_bundle: Path
) -> None:
    clock = ShiftedClock()
    good: dict[str, int] = {}
    with _serve(fleet.root) as (url, live):

        def accepted(agent: Agent) -> None:
            v = _rebuild(live)
            good.setdefault("v", v)  # the first good one: what the refusals keep
            _wait_for(lambda: _live_status(agent)["snapshot"]["version"] == v, "good snapshot")

        def refused(make: Callable[[], bytes], reason: str) -> Callable[[Agent], None]:
            def hold(agent: Agent) -> None:
                n = _outcome(agent, reason)
                _serve_instead(live, make())
                _wait_for(lambda: _outcome(agent, reason) > n + 1, reason)

            return hold

        def shifted(offset_s: float, reason: str) -> Callable[[Agent], None]:
            def hold(agent: Agent) -> None:
                n = _outcome(agent, reason)
                stale = _live_status(agent)["heartbeats"].get("stale", 0)
                clock.offset_s = offset_s
                _rebuild(live)  # a fresh snapshot, which the cab's clock says is not valid
                _wait_for(lambda: _outcome(agent, reason) > n + 1, reason)
                _wait_for(lambda: _live_status(agent)["heartbeats"].get("stale", 0) > stale, "hb")

            return hold

        def restored(agent: Agent) -> None:
            clock.offset_s = 0.0
            accepted(agent)

        net = fleet.network
        now = time.time
        forger = CryptoSigner.generate_ed25519()
        holds = {
            8: accepted,
            14: refused(
                lambda: _signed(fleet.repo, net, good["v"] + 50, now(), forger), LIVE_BAD_SIGNATURE
            ),
            20: refused(lambda: _signed(fleet.repo, net, good["v"] - 1, now()), LIVE_STALE_VERSION),
            26: refused(
                lambda: _signed(fleet.repo, net, good["v"] + 60, now() - 600), LIVE_EXPIRED
            ),
            32: shifted(+300.0, LIVE_EXPIRED),  # 5 minutes ahead: the snapshots look expired
            38: shifted(-300.0, LIVE_NOT_YET_VALID),  # 5 minutes behind: not yet valid
            44: restored,
        }
        agent, ticks, marks = _drive(fleet, tmp_path, url, holds, n_fixes=52, clock=clock)
    ph = _phases(ticks, marks)
    v = good["v"]
    for phase, reason in (
        (ph[2], LIVE_BAD_SIGNATURE),
        (ph[3], LIVE_STALE_VERSION),
        (ph[4], LIVE_EXPIRED),
    ):
        assert phase
        for t in phase:  # refused: the last good snapshot, still valid, is used; reason logged
            assert (t["live"]["version"], t["live"]["reason"]) == (v, reason)
            assert t["fleet"]["source"] == "live"
    for t in ph[5]:  # the clock 5 minutes ahead: the good one has expired too, none is used
        assert t["live"]["version"] is None and t["live"]["reason"] == LIVE_EXPIRED
        assert t["fleet"]["source"] in ("none", "prior")
    for t in ph[6]:  # 5 minutes behind: fresh ones are refused, the good one is still valid
        assert t["live"]["reason"] == LIVE_NOT_YET_VALID
    assert ph[7] and all(t["live"]["version"] > v and t["live"]["reason"] == "" for t in ph[7])
    st = _live_status(agent)
    assert st["unexpected_errors"] == 0 and agent.sync_status()["unexpected_errors"] == 0
    assert st["heartbeats"]["stale"] > 0  # the server dropped the wrong clock's heartbeats
    lb = load_bundle(manhattan_bundle)
    try:
        _unaffected(lb, ticks)
    finally:
        lb.close()
    assert sum(t["instruction"]["kind"] == "route" for t in ticks) > 0.7 * len(ticks)


def test_a_pickup_after_the_last_tick_waits_for_a_heartbeat_after_it(fleet: Fleet) -> None:
    """The meter is pressed between two ticks, and a heartbeat goes before the next tick: it
    carries the last tick's position, older than the pickup, and the server takes only
    events up to a heartbeat's time, so the pickup waits for the next tick's heartbeat (it
    was dropped from the pending events there, for good: the end-to-end test's wait for
    "pickup acked" then never ended)."""
    tick_s = float(int(time.time())) - 10.0  # the last tick's position, in a whole second
    with _serve(fleet.root) as (url, live):
        hc = HeartbeatClient(url, fleet.tokens["cab-9"], AREA, fleet.network)
        try:
            hc.record_event(PICKUP, tick_s + 2.0, -73.98, 40.75)  # the meter, 2 s later
            early = hc.send(t_s=tick_s, link=5, lon=-73.98, lat=40.75, vacant=True)
            assert (early.status, early.events_acked) == ("accepted", 0), early
            assert [e.t_s for e in hc.pending_events()] == [int(tick_s) + 2]  # kept
            late = hc.send(t_s=tick_s + 5.0, link=5, lon=-73.98, lat=40.75, vacant=False)
            assert (late.status, late.events_acked) == ("accepted", 1), late
            assert hc.pending_events() == ()
        finally:
            hc.close()
        _, pickups = live.inputs_now(AREA)
        assert [e.t_s for e in pickups] == [int(tick_s) + 2]  # the server has it, once


def test_server_down_guidance_goes_on(fleet: Fleet, tmp_path: Path) -> None:
    with _serve(fleet.root) as (url, _):
        pass  # the server is gone: nothing listens on its port any more

    def tried(agent: Agent) -> None:
        _wait_for(lambda: _outcome(agent, LIVE_UNREACHABLE) >= 2, "a failed fetch")
        _wait_for(lambda: _live_status(agent)["heartbeats"].get("unreachable", 0) >= 2, "hb")

    agent, ticks, marks = _drive(fleet, tmp_path, url, {10: tried}, n_fixes=25)
    before, after = _phases(ticks, marks)
    assert all(t["live"]["reason"] in (LIVE_NO_SNAPSHOT, LIVE_UNREACHABLE) for t in before)
    assert after and all(t["live"]["reason"] == LIVE_UNREACHABLE for t in after)
    assert all(t["live"]["version"] is None and t["fleet"]["source"] in ("none", "prior")
               for t in ticks)  # fmt: skip
    assert sum(t["instruction"]["kind"] == "route" for t in ticks) > 0.7 * len(ticks)
    assert _live_status(agent)["unexpected_errors"] == 0
    assert agent.summary.outbox_remaining  # the trip log waits for the server


# ====================================================================== the pure tick
@dataclass
class FakeSupply:
    """models.supply.SupplyTable's one method the tick reads: vacant passes per hour."""

    per_h: float

    def rates(self, edge_ids: npt.ArrayLike, minute_of_week: float) -> npt.NDArray[np.float64]:
        return np.full(np.asarray(edge_ids).shape, self.per_h, dtype=np.float64)


@dataclass
class FakeSnapshot:
    area: str
    version: int
    built_s: float
    sha256: str
    network: str
    ids: list[int]
    planned: list[int]

    def link_counts(self, edge_ids: npt.ArrayLike) -> tuple[Any, Any]:
        ids = np.asarray(edge_ids, dtype=np.int64)
        m = dict(zip(self.ids, self.planned, strict=True))
        return np.zeros(ids.shape, np.int64), np.array([m.get(int(i), 0) for i in ids], np.int64)


def test_decide_turns_the_live_input_into_a_fleet_view(manhattan_bundle: Path) -> None:
    lb = load_bundle(manhattan_bundle)
    try:
        f = read_csv_trace(DRIVE_CSV)[30]
        plain = decide(lb, TickInputs(f.time_s, f, None, "en", "interval"))
        assert plain.fleet is not None and plain.fleet.source == "none"
        assert plain.plan is not None and plain.match is not None
        rec = plain.to_record(lb)
        assert rec["live"] is None and rec["fleet"]["source"] == "none"
        # the bundle's supply prior: planned against offline, and under a live snapshot
        sb = dataclasses.replace(lb, supply=FakeSupply(30.0))  # type: ignore[arg-type]  # a duck-typed SupplyTable
        off = LiveInput(AREA, None, reason=LIVE_UNREACHABLE)
        prior = decide(sb, TickInputs(f.time_s, f, None, "en", "interval", live=off))
        assert prior.fleet is not None and prior.fleet.source == "prior"
        rec = prior.to_record(sb)
        assert rec["live"]["reason"] == LIVE_UNREACHABLE and rec["live"]["version"] is None
        assert rec["fleet"]["supply_per_h_total"] > 0
        assert prior.plan is not None and prior.plan.to_json() != plain.plan.to_json()
        # a snapshot: another cab's planned route claims this cab's route ahead
        route = [int(e) for e in plain.plan.edges]
        snap = FakeSnapshot(
            AREA, 9, 1000.0, "cd" * 32, "", sorted(set(route)), [1] * len(set(route))
        )
        seen = LiveInput(AREA, snap, age_s=20.0, own_link=plain.match.best.edge_id)
        r = decide(sb, TickInputs(f.time_s, f, None, "en", "interval", live=seen))
        rec = r.to_record(sb)
        assert rec["live"]["version"] == 9 and rec["live"]["sha256"] == "cd" * 32
        assert rec["fleet"]["source"] == "live" and rec["fleet"]["claims_per_h_total"] > 0
        # the others' planned passes add to the prior as background supply
        assert rec["fleet"]["supply_per_h_total"] == pytest.approx(
            prior.to_record(sb)["fleet"]["supply_per_h_total"] + rec["fleet"]["claims_per_h_total"],
            abs=0.01,
        )
        # its own route reported: subtracted, nothing left to claim
        mine = dataclasses.replace(seen, own_route=tuple(route))
        r2 = decide(sb, TickInputs(f.time_s, f, None, "en", "interval", live=mine))
        assert r2.fleet is not None and r2.fleet.claims_per_h is None
        assert r.to_record(sb) == decide(
            sb, TickInputs(f.time_s, f, None, "en", "interval", live=seen)
        ).to_record(sb)  # pure
    finally:
        lb.close()


def test_route_ahead_stops_after_two_km(manhattan_bundle: Path) -> None:
    lb = load_bundle(manhattan_bundle)
    try:
        f = read_csv_trace(DRIVE_CSV)[0]
        g = lb.store.radius_graph(f.lon, f.lat, 1500.0)
        ids = tuple(int(e) for e in g.edge_id[:400])
        ahead = route_ahead(g, ids, 2000.0)
        lengths = g.length_m[g.local(np.asarray(ahead))]
        assert 2000.0 <= float(lengths.sum()) < 2000.0 + float(lengths[-1]) + 1e-6
        assert route_ahead(g, (ids[0], -5, ids[1])) == (ids[0],)  # a link off the graph ends it
        assert route_ahead(g, ()) == ()
    finally:
        lb.close()


def test_threads_do_not_exist_without_a_server(tmp_path: Path, manhattan_bundle: Path) -> None:
    agent = Agent(
        AgentConfig(bundle_dir=manhattan_bundle, data_dir=tmp_path),
        TraceReplay(read_csv_trace(DRIVE_CSV)[:6], ManualClock(), speed=1.0),
        ManualClock(),
    )
    agent.run()
    ticks = [r for r in read_records(tmp_path / "trips") if r["kind"] == "tick"]
    assert ticks and all(t["live"] is None and t["fleet"]["source"] == "none" for t in ticks)
    assert "live" not in agent.sync_status()
    assert not [t for t in threading.enumerate() if t.name.startswith("agent-live")]


def test_the_threads_survive_whatever_a_step_throws(fleet: Fleet, tmp_path: Path) -> None:
    """Injected exceptions in the heartbeat and the fetch: logged, counted, and the threads
    carry on (the next steps reach the network again: here a server that is gone)."""
    from agent.live import LiveLink, Position

    with _serve(fleet.root) as (url, _):
        pass
    link = LiveLink(
        server_url=url,
        token="t",
        area=AREA,
        network_sha256=fleet.network,
        data_dir=tmp_path,
        tuf_dir=BundleStore(fleet.device).tuf_dir,
        clock=time.time,
        heartbeat_every_s=FAST,
        snapshot_every_s=FAST,
    )
    calls: Counter[str] = Counter()
    assert link.snapshots is not None
    real_send, real_fetch = link.heartbeat.send, link.snapshots.fetch

    def send(**kw: Any) -> Any:
        calls["send"] += 1
        if calls["send"] <= 3:
            raise RuntimeError("injected")
        return real_send(**kw)

    def fetch() -> Any:
        calls["fetch"] += 1
        if calls["fetch"] <= 3:
            raise ValueError("injected")
        return real_fetch()

    link.heartbeat.send = send  # type: ignore[method-assign]  # inject failures
    link.snapshots.fetch = fetch  # type: ignore[method-assign]  # inject failures
    link.note(Position(time.time(), 5, -73.98, 40.75, (6, 7)))
    link.start()
    try:
        _wait_for(lambda: calls["send"] >= 5 and calls["fetch"] >= 5, "steps after the failures")
    finally:
        link.close()
    st = link.status()
    assert st["unexpected_errors"] == 6
    assert st["heartbeats"]["unreachable"] >= 1
    assert st["snapshot"]["outcomes"][LIVE_UNREACHABLE] >= 1
    assert link.tick_input(time.time()).reason == LIVE_UNREACHABLE
