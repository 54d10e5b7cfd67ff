"""The live layer's inputs on both back ends (issue 19): in memory with versions in
``live/versions.json`` (``fleet serve --root DIR``), and in PostgreSQL (``--database
postgresql://…``), where several server processes build the same snapshot from the same inputs
and versions only grow across processes.

Real components: a throwaway PostgreSQL cluster on a loopback port (tests/pgcluster.py) and
real ``nagashi fleet serve`` processes on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import msgpack
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync import FleetRepository
from sync._live_server import LiveConfig, LiveService, _area_context
from sync.errors import LiveInputError
from sync.live import (
    DROPOFF,
    EVENT_MAX_AGE_S,
    PICKUP,
    Heartbeat,
    LiveTrust,
    MeterEvent,
    Snapshot,
    encode_heartbeat,
    network_tag,
    verify_snapshot,
)
from sync.logstore import SqliteLogStorage
from sync.logstore_pg import PostgresLogStorage
from tests.sync.conftest import Fleet, fleet_serve

T0 = 1_800_000_000


def _hb(t: int, *, link: int = 3, vacant: bool = True, net: str = "", **kw: Any) -> Heartbeat:
    base: dict[str, Any] = {
        "area": "monaco",
        "t_s": t,
        "network": network_tag(net or "ab" * 32),
        "link": link,
        "lon": 7.42,
        "lat": 43.73,
        "vacant": vacant,
        "events": (),
        "route": (),
    }
    base.update(kw)
    return Heartbeat(**base)


@pytest.fixture(params=["sqlite", "postgresql"])
def services(request: pytest.FixtureRequest, fleet: Fleet) -> Iterator[Callable[..., LiveService]]:
    """``make(config=None)``: a new LiveService on the fleet, as a new server process would
    start it: on SQLite (the default) with its inputs in memory and its versions in the fleet
    root; on PostgreSQL with everything in one database shared by every service made."""
    with ExitStack() as stack:
        database = None
        if request.param == "postgresql":
            database = request.getfixturevalue("pg_cluster").database()

        def make(config: LiveConfig | None = None) -> LiveService:
            inputs = None
            if database is not None:
                storage = PostgresLogStorage(database)
                stack.callback(storage.close)
                inputs = storage.live_inputs()
            return LiveService(fleet.repo, config, inputs=inputs)

        yield make


def test_latest_heartbeat_pickups_once_and_stale_inputs_dropped(
    services: Callable[..., LiveService],
) -> None:
    live = services()
    cfg = live.config
    near = MeterEvent(PICKUP, T0 - 60, 7.421, 43.731)
    old = MeterEvent(PICKUP, T0 - EVENT_MAX_AGE_S - 1, 7.422, 43.732)
    drop = MeterEvent(DROPOFF, T0 - 30, 7.423, 43.733)
    assert live.accept("cab-1", _hb(T0, events=(near, old, drop)), T0) == 3
    assert live.accept("cab-1", _hb(T0 - 10, link=9, events=(near,)), T0) == 1  # re-sent
    assert live.accept("cab-2", _hb(T0 - 100, vacant=False), T0) == 0
    hbs, pickups = live.inputs.take("monaco", T0, cfg)
    assert sorted(hbs, key=lambda h: h.t_s) == [_hb(T0 - 100, vacant=False), _hb(T0)]
    assert pickups == [near]  # once; the drop-off and the one past the hour are not kept
    # later: cab-2's heartbeat is too old to count, then the pickup is past the hour
    hbs, pickups = live.inputs.take("monaco", T0 - 100 + cfg.max_age_s + 1, cfg)
    assert hbs == [_hb(T0)] and pickups == [near]
    hbs, pickups = live.inputs.take("monaco", T0 - 60 + EVENT_MAX_AGE_S + 1, cfg)
    assert hbs == [] and pickups == []
    with pytest.raises(LiveInputError, match="not published"):
        live.accept("cab-1", _hb(T0, area="nowhere"), T0)


def test_cabs_per_area_are_bounded(services: Callable[..., LiveService]) -> None:
    live = services(LiveConfig(max_cabs_per_area=2, max_pickups_per_area=3))
    live.accept("cab-1", _hb(T0), T0)
    live.accept("cab-2", _hb(T0), T0)
    with pytest.raises(LiveInputError, match="more than 2 cabs"):
        live.accept("cab-3", _hb(T0), T0)
    events = tuple(MeterEvent(PICKUP, T0 - 50 + i, 7.42, 43.73) for i in range(5))
    live.accept("cab-1", _hb(T0 + 1, link=5, events=events), T0)  # a known cab: kept
    hbs, pickups = live.inputs.take("monaco", T0, live.config)
    assert sorted(h.link for h in hbs) == [3, 5]
    assert pickups == list(events[2:])  # the latest three


def test_versions_only_grow_across_restarts(services: Callable[..., LiveService]) -> None:
    first = services()
    assert first.rebuild(T0) == {"monaco": T0}
    assert first.rebuild(T0) == {"monaco": T0 + 1}  # twice in a second: still newer
    again = services()  # a restarted process
    assert again.rebuild(T0 - 5) == {"monaco": T0 + 2}  # even with a clock that went back
    assert again.rebuild(T0 + 100) == {"monaco": T0 + 100}
    cur = again.current("monaco")
    assert cur is not None and cur[0] == T0 + 100


def _content(s: Snapshot) -> dict[str, Any]:
    """What a snapshot says (not when it was built)."""
    return {
        "cabs": (s.vacant_cabs, s.occupied_cabs),
        "links": (s.link_ids.tolist(), s.vacant_now.tolist(), s.planned.tolist()),
        "cells": (s.cell_ids.tolist(), s.pickups.tolist()),
        "network": s.network,
        "grid": s.grid,
    }


def _trust(repo: FleetRepository) -> LiveTrust:
    return LiveTrust.from_metadata(
        repo.trusted_root_path().read_bytes(), repo.targets_md().to_bytes()
    )


@pytest.mark.parametrize("services", ["postgresql"], indirect=True)  # memory: one process
def test_two_services_on_one_database_build_the_same_snapshot(
    services: Callable[..., LiveService], fleet: Fleet
) -> None:
    """Heartbeats to two services (two server processes) on PostgreSQL: each builds from all
    of them, with versions that grow across both, and each serves the newest built."""
    a, b = services(), services()
    net, grid = a.context("monaco")
    assert grid is not None
    cell = (grid[0] + 0.5 * grid[2], grid[1] + 0.5 * grid[3])
    now = time.time()
    t = int(now)
    pickup = MeterEvent(PICKUP, t - 30, *cell)
    for i, live in enumerate([a, b, a, b]):
        hb = _hb(t, link=10 + i, net=net, route=(20 + i, 21 + i), events=(pickup,))
        live.accept(f"cab-{i}", hb, now)
    b.accept("cab-0", _hb(t, link=10, net=net, route=(20, 21), events=(pickup,)), now)  # again
    va = a.rebuild(now)["monaco"]
    vb = b.rebuild(now)["monaco"]
    assert vb > va
    cur_a, cur_b = a.current("monaco"), b.current("monaco")
    assert cur_a is not None and cur_b is not None
    assert cur_a == cur_b and cur_a[0] == vb  # a serves b's newer snapshot
    snap = verify_snapshot(cur_a[1], _trust(fleet.repo), now, area="monaco", network=net)
    assert snap.vacant_cabs == 4 and snap.link_ids.tolist() == [10, 11, 12, 13, 20, 21, 22, 23, 24]
    assert snap.pickups.tolist() == [[4, 4, 4]]  # one pickup per cab, each kept once
    assert a.rebuild(now)["monaco"] == vb + 1  # and a's next build is newer still
    own = a.current("monaco")
    assert own is not None and own[0] == vb + 1
    snap_a = verify_snapshot(own[1], _trust(fleet.repo), now, area="monaco", network=net)
    assert _content(snap_a) == _content(snap)


def test_fleet_serve_processes_on_one_database_serve_the_same_snapshot(
    tmp_path: Path, fleet: Fleet, request: pytest.FixtureRequest, backend: str
) -> None:
    """Real ``fleet serve`` processes: on PostgreSQL two of them, heartbeats of three cabs to
    each; the snapshot from either counts all six, the same content, and the versions a cab
    reading from both alternately sees never go back. On SQLite the same through its one
    process."""
    args: list[str] = ["--live-build-every", "0.2"]
    if backend == "postgresql":
        database = request.getfixturevalue("pg_cluster").database()
        storage: Any = PostgresLogStorage(database)
        args += ["--database", database]
    else:
        storage = SqliteLogStorage(fleet.root / "fleet.sqlite")
    tokens = {f"cab-{i}": storage.add_token("vehicle", f"cab-{i}", 0.0) for i in range(6)}
    eng = storage.add_token("engineer", "ana", 0.0)
    storage.close()
    net, grid = _area_context(fleet.repo, fleet.repo.published()["monaco"])
    assert grid is not None
    cell = (grid[0] + 0.5 * grid[2], grid[1] + 0.5 * grid[3])
    n_proc = 2 if backend == "postgresql" else 1
    with ExitStack() as stack:
        urls = [stack.enter_context(fleet_serve(fleet.root, *args))[0] for _ in range(n_proc)]
        t = int(time.time())
        for i, token in enumerate(tokens.values()):
            url = urls[i % n_proc]
            pickup = MeterEvent(PICKUP, t - 60, *cell)
            hb = _hb(t, link=10 + i, net=net, route=(100 + i,), events=(pickup,))
            r = httpx.post(
                f"{url}/v1/live/heartbeat",
                content=encode_heartbeat(hb),
                headers={"authorization": f"Bearer {token}"},
                timeout=10,
            )
            assert r.status_code == 200, r.text
            assert msgpack.unpackb(r.content)["events_acked"] == 1
        trust = _trust(fleet.repo)
        auth = {"authorization": f"Bearer {eng}"}
        seen: list[int] = []
        contents: list[dict[str, Any]] = []
        for _ in range(600):  # until each process serves a build that has all six (bounded)
            for url in urls:
                r = httpx.get(
                    f"{url}/v1/live/snapshot", params={"area": "monaco"}, headers=auth, timeout=10
                )
                if r.status_code != 200:
                    continue
                snap = verify_snapshot(r.content, trust, time.time(), area="monaco", network=net)
                seen.append(snap.version)
                if snap.vacant_cabs == 6:
                    contents.append(_content(snap))
            if len(contents) >= 2 * n_proc:
                break
            time.sleep(0.05)
        assert len(contents) >= 2 * n_proc, f"versions seen {seen[-5:]}"
        assert seen == sorted(seen)  # a cab reading from any process: never an older version
        assert all(c == contents[0] for c in contents)
        assert contents[0]["links"][0] == [*range(10, 16), *range(100, 106)]
        assert contents[0]["cells"][1] == [[6, 6, 6]]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_database_restart_gives_503_to_heartbeats_and_keeps_the_snapshot(
    fleet: Fleet, pg_cluster: Any
) -> None:
    """While PostgreSQL is away a heartbeat is answered 503 (retry later; the cab keeps its
    pickups) and the last snapshot is still served; after the restart both work again."""
    from sync.server import create_app
    from tests.sync.conftest import run_server

    storage = PostgresLogStorage(pg_cluster.database(), timeout_s=2.0)
    token = storage.add_token("vehicle", "cab-1", 0.0)
    app = create_app(fleet.root, storage=storage)
    app.state.live.config = LiveConfig(build_every_s=3600)  # builds when the test says
    auth = {"authorization": f"Bearer {token}"}

    def beat() -> httpx.Response:
        body = encode_heartbeat(_hb(int(time.time())))
        return httpx.post(f"{url}/v1/live/heartbeat", content=body, headers=auth, timeout=30)

    def snapshot() -> httpx.Response:
        return httpx.get(
            f"{url}/v1/live/snapshot", params={"area": "monaco"}, headers=auth, timeout=30
        )

    try:
        with run_server(app) as url:
            assert beat().status_code == 200
            app.state.live.rebuild()
            before = snapshot()
            assert before.status_code == 200
            pg_cluster.stop("fast")
            try:
                r = beat()
                assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
                during = snapshot()
                assert during.status_code == 200 and during.content == before.content
            finally:
                pg_cluster.start()
            for _ in range(300):  # the pool reconnects (with its backoff): bounded retries
                if beat().status_code == 200:
                    break
                time.sleep(0.1)
            assert beat().status_code == 200
            assert app.state.live.rebuild()["monaco"] > int(before.headers["etag"].strip('"'))
            assert snapshot().headers["etag"] != before.headers["etag"]
    finally:
        storage.close()


@pytest.fixture(scope="module")
def equivalence_db(pg_cluster: Any) -> str:
    """One database for all the examples below (emptied at the start of each)."""
    url: str = pg_cluster.database()
    return url


_event = st.tuples(st.sampled_from([PICKUP, DROPOFF]), st.integers(0, EVENT_MAX_AGE_S))
_beat = st.tuples(
    st.integers(0, 3),  # cab
    st.integers(0, 90),  # seconds since the previous heartbeat (the server's clock)
    st.integers(-150, 40),  # the heartbeat's time against the server's clock
    st.integers(0, 5),  # link
    st.booleans(),  # vacant
    st.lists(_event, max_size=4),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # reset in each example
)
@given(beats=st.lists(_beat, max_size=25), later=st.integers(0, 4000))
def test_both_back_ends_take_the_same_inputs(
    fleet: Fleet, equivalence_db: str, beats: list[Any], later: int
) -> None:
    """Any sequence of heartbeats (stale, ahead, out of order, events re-sent): what a build
    takes later is the same in memory and in PostgreSQL."""
    storage = PostgresLogStorage(equivalence_db)
    try:
        with psycopg.connect(equivalence_db) as conn:  # a fresh start for each example
            conn.execute("TRUNCATE live_latest, live_pickups, live_versions, live_snapshots")
        memory = LiveService(fleet.repo)
        pg = LiveService(fleet.repo, inputs=storage.live_inputs())
        now = float(T0)
        sent: dict[int, list[MeterEvent]] = {}
        for cab, step, ahead, link, vacant, events in beats:
            now += step
            t = int(now) + ahead
            mine = sent.setdefault(cab, [])
            mine += [MeterEvent(kind, t - age, 7.42, 43.73) for kind, age in events]
            hb = _hb(t, link=link, vacant=vacant, events=tuple(mine[-8:]))  # re-sent ones too
            outcomes: list[int | str] = []
            for live in (memory, pg):
                try:
                    outcomes.append(live.accept(f"cab-{cab}", hb, now))
                except ValueError as e:  # stale or ahead: refused by both alike
                    outcomes.append(str(e))
            assert outcomes[0] == outcomes[1]
        at = now + later
        got = [live.inputs.take("monaco", at, live.config) for live in (memory, pg)]
        (hbs_m, picks_m), (hbs_p, picks_p) = got
        assert sorted(map(repr, hbs_m)) == sorted(map(repr, hbs_p))
        assert sorted(map(repr, picks_m)) == sorted(map(repr, picks_p))
    finally:
        storage.close()


@pytest.mark.parametrize("first", ["heartbeat", "build"])
def test_a_snapshot_counts_exactly_the_heartbeats_stamped_before_it(
    services: Callable[..., LiveService], monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    """A heartbeat that arrives while a snapshot is built (the cab then sends its next one as
    the server builds): the snapshot counts it if and only if its stamp is at or before the
    snapshot's ``built_s``, the rule by which a cab finds its own heartbeat in a snapshot
    (``agent.live``) and subtracts it. (The stamp used to be taken before the heartbeat was
    kept, so a build in between was stamped after it without counting it: the cab then counted
    its own planned route as another cab's, an intermittent failure of the agent's live test.)"""
    live = services()
    net, _ = live.context("monaco")
    inside, go = threading.Event(), threading.Event()
    slow = "accept" if first == "heartbeat" else "take"
    step = getattr(live.inputs, slow)

    def held(*a: Any, **kw: Any) -> Any:  # the first step stops halfway until the second runs
        inside.set()
        go.wait(10)
        return step(*a, **kw)

    monkeypatch.setattr(live.inputs, slow, held)
    stamp: list[float] = []
    beat = threading.Thread(
        target=lambda: stamp.append(live.take_heartbeat("cab-1", _hb(int(time.time()), net=net))[1])
    )
    build = threading.Thread(target=live.rebuild)
    one, two = (beat, build) if first == "heartbeat" else (build, beat)
    one.start()
    assert inside.wait(10)
    monkeypatch.setattr(live.inputs, slow, step)  # the second one's step is not held
    two.start()
    two.join(0.3)  # it waits for the first one to be done ...
    go.set()  # ... which now goes on
    one.join(10)
    two.join(10)
    cur = live.current("monaco")
    assert cur is not None and stamp
    snap = verify_snapshot(cur[1], _trust(live.repo), time.time(), area="monaco", network=net)
    counted = snap.vacant_cabs == 1
    assert counted == (stamp[0] <= snap.built_s), (stamp[0], snap.built_s, snap.vacant_cabs)
    assert counted == (first == "heartbeat")
