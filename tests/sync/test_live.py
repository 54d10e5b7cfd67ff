"""The live layer's transport and trust (issue 17): heartbeats, snapshots (aggregates only),
the live key delegated by targets, the cab's verification with reason codes, the archive
replay reads, and the faults (server down, expired, forged, replayed, malformed, wrong
clock) against a real server on loopback."""

from __future__ import annotations

import os
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]  # not in its __all__

from sync import BundleStore, FleetRepository, PullConfig, Updater
from sync._live_server import LiveConfig
from sync.errors import LiveInputError, LiveRefusedError, SyncStorageError
from sync.live import (
    DROPOFF,
    LIVE_BAD_SIGNATURE,
    LIVE_EXPIRED,
    LIVE_MALFORMED,
    LIVE_NO_TRUST,
    LIVE_NOT_YET_VALID,
    LIVE_OTHER_NETWORK,
    LIVE_STALE_VERSION,
    LIVE_UNREACHABLE,
    PICKUP,
    Heartbeat,
    HeartbeatClient,
    LiveClientConfig,
    LiveTrust,
    MeterEvent,
    Snapshot,
    SnapshotArchive,
    SnapshotClient,
    TrustSource,
    build_snapshot,
    decode_body,
    decode_heartbeat,
    encode_body,
    encode_heartbeat,
    network_tag,
    open_envelope,
    sign_envelope,
    verify_snapshot,
)
from sync.logstore import SqliteLogStorage
from sync.server import create_app
from tests.sync.conftest import Fleet, accept_all, run_server, utcnow

NET = "ab" * 32
GRID = (-74.0, 40.70, 0.006, 0.0045, 10, 20)
T0 = 1_800_000_000


def _hb(
    t: int = T0, link: int = 7, vacant: bool = True, route: tuple[int, ...] = (), **kw: Any
) -> Heartbeat:
    base: dict[str, Any] = {
        "area": "monaco",
        "t_s": t,
        "network": network_tag(NET),
        "link": link,
        "lon": -73.98,
        "lat": 40.75,
        "vacant": vacant,
        "events": (),
        "route": route,
    }
    base.update(kw)
    return Heartbeat(**base)


# ====================================================================== heartbeats
def test_heartbeat_round_trip_and_size() -> None:
    """A heartbeat without route fits in tens of bytes; a 2 km Manhattan route (26 edges,
    ids along streets) adds about one byte per edge."""
    bare = _hb()
    assert decode_heartbeat(encode_heartbeat(bare)) == bare
    assert len(encode_heartbeat(bare)) <= 40
    route = tuple(2000 + 3 * i for i in range(26))
    ev = (MeterEvent(PICKUP, T0 - 30, -73.981, 40.751),)
    full = _hb(route=route, events=ev)
    assert decode_heartbeat(encode_heartbeat(full)) == full
    assert len(encode_heartbeat(full)) <= 40 + 26 + 2 + 20


def _wire(**change: Any) -> bytes:
    doc: list[Any] = [1, "monaco", T0, b"\xab" * 4, 7, -73_980_000, 40_750_000, True, [], [5, 1]]
    names = ["schema", "area", "t", "net", "link", "lon", "lat", "vacant", "events", "route"]
    for k, v in change.items():
        doc[names.index(k)] = v
    out: bytes = msgpack.packb(doc, use_bin_type=True)
    return out


@pytest.mark.parametrize(
    "bad",
    [
        {"schema": 2},
        {"area": "Monaco!"},
        {"area": 3},
        {"t": -1},
        {"t": 1.5},
        {"t": True},
        {"net": b"abc"},
        {"net": "abcd"},
        {"link": -2},
        {"link": 1 << 31},
        {"lon": 181_000_000},
        {"lat": -90_000_001},
        {"vacant": 1},
        {"events": [[3, T0, 0, 0]]},
        {"events": [[1, T0 + 1, 0, 0]]},  # after the heartbeat
        {"events": [[1, T0 - 4000, 0, 0]]},  # older than the longest window
        {"events": [[1, T0, 0]]},
        {"events": [[1, T0, 0, 0]] * 33},
        {"route": [1, -2]},  # an id below 0
        {"route": [1 << 31]},
        {"route": [1.0]},
        {"route": list(range(257))},
    ],
)
def test_heartbeat_fields_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(LiveInputError):
        decode_heartbeat(_wire(**bad))


def test_heartbeat_not_msgpack_or_too_big() -> None:
    for data in (b"\xc1", b"", msgpack.packb({"a": 1}), b"\x91" + b"\x00" * 5000):
        with pytest.raises(LiveInputError):
            decode_heartbeat(data)


# ====================================================================== snapshot building
def test_build_snapshot_counts() -> None:
    now = T0 + 10.0
    hbs = [
        _hb(link=7, route=(8, 9, 10)),
        _hb(link=7, route=(9, 7, 11, 9)),  # own link and repeats count once
        _hb(link=8, vacant=False, route=(20, 21)),  # occupied: neither now nor planned
        _hb(t=T0 - 40, link=30, route=(31,)),  # 50 s old: not on its link now, route counts
        _hb(t=T0 - 200, link=40, route=(41,)),  # too old: nothing
        _hb(link=50, route=(51,), network=b"\x00\x00\x00\x00"),  # another road network
        _hb(link=60, area="shibuya"),  # another area
    ]
    ev = [
        MeterEvent(PICKUP, T0 - 60, -73.99, 40.71),  # cell (1, 2)
        MeterEvent(PICKUP, T0 - 1000, -73.99, 40.71),
        MeterEvent(PICKUP, T0 - 2000, -73.99, 40.71),
        MeterEvent(PICKUP, T0 - 4000, -73.99, 40.71),  # past the hour
        MeterEvent(DROPOFF, T0 - 60, -73.99, 40.71),  # not a pickup
        MeterEvent(PICKUP, T0 - 60, -80.0, 40.71),  # outside the grid
    ]
    s = build_snapshot(hbs, now, area="monaco", pickups=ev, network=NET, grid=GRID, version=3)
    assert (s.vacant_cabs, s.occupied_cabs) == (3, 1)  # the other network's cab counts here
    counts = zip(s.vacant_now.tolist(), s.planned.tolist(), strict=True)
    got = dict(zip(s.link_ids.tolist(), counts, strict=True))
    assert got == {7: (2, 0), 8: (0, 1), 9: (0, 2), 10: (0, 1), 11: (0, 1), 31: (0, 1)}
    assert s.cell_ids.tolist() == [2 * 10 + 1]
    assert s.pickups.tolist() == [[1, 2, 3]]
    now_c, planned_c = s.link_counts([7, 9, 12345])
    assert now_c.tolist() == [2, 0, 0] and planned_c.tolist() == [0, 2, 0]
    assert s.cell_pickups(200)[21].tolist() == [1, 2, 3]


@settings(max_examples=150, deadline=None)
@given(
    cabs=st.lists(
        st.tuples(
            st.integers(-1, 12),  # its link (-1: not matched)
            st.booleans(),  # vacant
            st.lists(st.sampled_from([0, 1, 2, 3, 5, 8, 12, 2**31 + 5]), max_size=12),
        ),
        max_size=25,
    )
)
def test_planned_passes_are_the_distinct_other_cabs_on_each_link(
    cabs: list[tuple[int, bool, list[int]]],
) -> None:
    """The snapshot's counts against their definition, by sets: per link the vacant cabs on
    it now, and the vacant cabs whose route holds it other than as their own link, each once
    (the one-sort count of ``_link_counts``; link ids past 2**31 too)."""
    hbs = [_hb(link=link, vacant=v, route=tuple(r)) for link, v, r in cabs]
    s = build_snapshot(hbs, T0 + 1.0, area="monaco", network=NET)
    now: dict[int, int] = {}
    planned: dict[int, set[int]] = {}
    for k, (link, v, r) in enumerate(cabs):
        if not v:
            continue
        if link >= 0:
            now[link] = now.get(link, 0) + 1
        for f in r:
            if f != link:
                planned.setdefault(f, set()).add(k)
    want = {f: (now.get(f, 0), len(planned.get(f, ()))) for f in set(now) | set(planned)}
    counts = zip(s.vacant_now.tolist(), s.planned.tolist(), strict=True)
    assert dict(zip(s.link_ids.tolist(), counts, strict=True)) == want
    assert s.link_ids.tolist() == sorted(want)


def test_snapshot_holds_no_vehicle_ids(fleet: Fleet) -> None:
    """Aggregates only: the signed body's fields are the fixed set and none of the cabs'
    ids, tokens or exact positions appears in it."""
    storage = SqliteLogStorage(fleet.root / "fleet.sqlite")
    token = storage.add_token("vehicle", "cab-unique-4711", 0.0)
    app = create_app(fleet.root, storage=storage)
    live = app.state.live
    hb = _hb(t=int(time.time()), lon=7.4212345, lat=43.7398765, route=(1, 2))
    live.accept("cab-unique-4711", hb, time.time())
    live.rebuild()
    _, data = live.current("monaco")
    body, _ = open_envelope(data)
    raw = zlib.decompress(body)
    doc = msgpack.unpackb(raw)
    assert set(doc) == {
        "schema", "area", "version", "built_s", "expires_s", "network", "grid", "cabs",
        "links", "now", "planned", "cells", "pickups",
    }  # fmt: skip
    positions = [msgpack.packb(x) for x in (7421234, 7421235, 43739876, 43739877)]
    for needle in (b"cab-unique-4711", token.encode(), *positions):
        assert needle not in raw and needle not in data


def _random_snapshot(draw: Any) -> Snapshot:
    ids = sorted(draw(st.sets(st.integers(0, (1 << 31) - 1), max_size=50)))
    cells = sorted(draw(st.sets(st.integers(0, 199), max_size=20)))
    n = np.array
    return Snapshot(
        area="monaco",
        version=draw(st.integers(1, 1 << 62)),
        built_s=float(T0),
        expires_s=float(T0 + 180),
        network=NET,
        grid=GRID,
        vacant_cabs=draw(st.integers(0, 10_000)),
        occupied_cabs=draw(st.integers(0, 10_000)),
        link_ids=n(ids, dtype=np.int64),
        vacant_now=n([draw(st.integers(0, 0xFFFF)) for _ in ids], dtype=np.int64),
        planned=n([draw(st.integers(0, 0xFFFF)) for _ in ids], dtype=np.int64),
        cell_ids=n(cells, dtype=np.int64),
        pickups=n([[draw(st.integers(0, 0xFFFF)) for _ in range(3)] for _ in cells], np.int64)
        .reshape(len(cells), 3),
    )  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_body_round_trip(data: Any) -> None:
    s = _random_snapshot(data.draw)
    back = decode_body(encode_body(s))
    for f in ("area", "version", "built_s", "expires_s", "network", "grid"):
        assert getattr(back, f) == getattr(s, f)
    for f in ("link_ids", "vacant_now", "planned", "cell_ids", "pickups"):
        assert np.array_equal(getattr(back, f), getattr(s, f))


# ====================================================================== trust and verification
def _trust(repo: FleetRepository) -> LiveTrust:
    return LiveTrust.from_metadata(
        repo.trusted_root_path().read_bytes(), repo.targets_md().to_bytes()
    )


def _signed(repo: FleetRepository, version: int, built: float, signer: Any = None) -> bytes:
    s = build_snapshot([_hb()], built, area="monaco", network=NET, grid=GRID, version=version)
    return sign_envelope(encode_body(s), [signer or repo.live_signer()])


def _code(data: bytes, trust: LiveTrust, now: float, **kw: Any) -> str:
    try:
        verify_snapshot(data, trust, now, area=kw.pop("area", "monaco"), **kw)
    except LiveRefusedError as e:
        return e.reason
    return "accepted"


def test_verify_refuses_with_reason_codes(fleet: Fleet) -> None:
    repo = fleet.repo
    trust = _trust(repo)
    now = float(T0)
    good = _signed(repo, 10, now)
    assert _code(good, trust, now + 1) == "accepted"
    forged = _signed(repo, 11, now, signer=CryptoSigner.generate_ed25519())
    assert _code(forged, trust, now) == LIVE_BAD_SIGNATURE
    body, sigs = open_envelope(good)
    tampered = msgpack.packb(
        ["nagashi-live", 1, body[:-1] + bytes([body[-1] ^ 1]), [[k, bytes.fromhex(s.signature)]
         for k, s in sigs.items()]], use_bin_type=True)  # fmt: skip
    assert _code(tampered, trust, now) == LIVE_BAD_SIGNATURE
    unsigned = msgpack.packb(["nagashi-live", 1, body, []], use_bin_type=True)
    assert _code(unsigned, trust, now) == LIVE_BAD_SIGNATURE
    assert _code(good, trust, now, last_version=10) == LIVE_STALE_VERSION  # replayed
    assert _code(good, trust, now + 180 + 61) == LIVE_EXPIRED
    assert _code(good, trust, now + 180 + 59) == "accepted"  # within the skew allowance
    assert _code(good, trust, now - 61) == LIVE_NOT_YET_VALID  # the cab's clock is behind
    assert _code(good, trust, now, area="shibuya") == LIVE_MALFORMED
    assert _code(good, trust, now, network="cd" * 32) == LIVE_OTHER_NETWORK
    for junk in (b"", b"\xc1", good[:-3], msgpack.packb(["nagashi-live", 2, body, []])):
        assert _code(junk, trust, now) == LIVE_MALFORMED
    assert _code(good, trust, now, max_bytes=len(good) - 1) == LIVE_MALFORMED
    # signed by the fleet but out of shape: still refused, as malformed
    bomb = sign_envelope(b"\x78\x9c" + b"\x00" * 10, [repo.live_signer()])
    assert _code(bomb, trust, now) == LIVE_MALFORMED


def test_live_key_rotation_needs_only_targets_and_is_kept(fleet: Fleet) -> None:
    repo = fleet.repo
    root_v = repo.root_version()
    old = repo.live_signer()
    assert old is not None
    repo.rotate_key("timestamp", utcnow())  # other rotations and publishing keep the role
    repo.publish(fleet.bundles["v2"].path, "monaco", utcnow())
    signer = repo.live_signer()
    assert signer is not None and signer.public_key.keyid == old.public_key.keyid
    root_v = repo.root_version()
    (repo.keys_dir / "root.pem").rename(fleet.work / "root-offline.pem")  # root stays offline
    repo.rotate_key("live", utcnow())
    assert repo.root_version() == root_v
    new = repo.live_signer()
    assert new is not None and new.public_key.keyid != old.public_key.keyid
    trust = _trust(repo)
    assert trust.keyids() == [new.public_key.keyid]
    assert _code(_signed(repo, 5, T0, signer=old), trust, T0) == LIVE_BAD_SIGNATURE
    assert _code(_signed(repo, 5, T0), trust, T0) == "accepted"


def test_repository_from_before_the_live_role(tmp_path: Path) -> None:
    """No live key: trust says LIVE_NO_TRUST, ``rotate --role live`` gives the key."""
    repo = FleetRepository(tmp_path / "f")
    repo.init(utcnow())
    md = repo.targets_md()
    md.signed.delegations = None
    md.signatures.clear()
    md.sign(repo.signer("targets"))
    (repo.metadata_dir / f"{md.signed.version}.targets.json").write_bytes(md.to_bytes())
    (repo.keys_dir / "live.pem").unlink()
    assert repo.live_signer() is None
    with pytest.raises(LiveRefusedError) as e:
        _trust(repo)
    assert e.value.reason == LIVE_NO_TRUST
    repo.rotate_key("live", utcnow())
    assert repo.live_signer() is not None
    _trust(repo)


def test_trust_from_unverified_targets_is_refused(fleet: Fleet) -> None:
    repo = fleet.repo
    md = repo.targets_md()
    md.signatures.clear()
    md.sign(CryptoSigner.generate_ed25519())  # not the targets key root trusts
    with pytest.raises(LiveRefusedError) as e:
        LiveTrust.from_metadata(repo.trusted_root_path().read_bytes(), md.to_bytes())
    assert e.value.reason == LIVE_NO_TRUST


# ====================================================================== archive
def test_archive_by_version_and_hash(fleet: Fleet, tmp_path: Path) -> None:
    arc = SnapshotArchive(tmp_path / "live")
    trust = _trust(fleet.repo)
    datas = [_signed(fleet.repo, v, T0) for v in (3, 4)]
    for d in datas:
        p = arc.put(d, verify_snapshot(d, trust, T0, area="monaco"))
        assert arc.put(d, verify_snapshot(d, trust, T0, area="monaco")) == p  # once
    assert arc.highest_version("monaco") == 4
    s = arc.get("monaco", version=3)
    assert s.version == 3 and s.sha256 == verify_snapshot(datas[0], trust, T0, area="monaco").sha256
    assert arc.get("monaco", sha256=s.sha256).version == 3
    with pytest.raises(SyncStorageError):
        arc.get("monaco", version=99)
    p = next((tmp_path / "live" / "monaco").glob("4.*.live"))
    raw = p.read_bytes()  # flip the last byte (writing a fixed byte could leave it as it was)
    p.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))
    with pytest.raises(SyncStorageError, match="damaged"):
        arc.get("monaco", version=4)
    assert arc.prune("monaco", keep=1) == 1 and arc.highest_version("monaco") == 4


# ====================================================================== over loopback
@pytest.fixture(scope="module")
def live_fleet(
    tmp_path_factory: pytest.TempPathFactory, bundle_pair: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """The fleet app on loopback, a cab that pulled its bundle (so its TUF metadata holds the
    live key), and tokens (shared by the module's loopback tests: each reads what it changed)."""
    work = tmp_path_factory.mktemp("live")
    repo = FleetRepository(work / "fleet")
    repo.init(utcnow())
    repo.publish(bundle_pair["v1"].path, "monaco", utcnow())
    fleet = Fleet(repo.root, repo, bundle_pair, work / "device", work)
    storage = SqliteLogStorage(fleet.root / "fleet.sqlite")
    tokens = {
        "cab-1": storage.add_token("vehicle", "cab-1", 0.0),
        "cab-2": storage.add_token("vehicle", "cab-2", 0.0),
        "ana": storage.add_token("engineer", "ana", 0.0),
    }
    app = create_app(fleet.root, storage=storage)
    # the background build runs once, at the first live request, and then not during the
    # tests (they rebuild when they mean to): started and waited for here
    app.state.live.config = LiveConfig(build_every_s=3600)
    with run_server(app) as url:
        h = {"authorization": f"Bearer {tokens['ana']}"}
        for _ in range(400):
            r = httpx.get(f"{url}/v1/live/snapshot", params={"area": "monaco"}, headers=h)
            if r.status_code == 200:
                break
            time.sleep(0.025)
        assert r.status_code == 200, r.text
        store = fleet.store()
        u = Updater(store, PullConfig(url, "monaco"), fleet.trusted_root, health_check=accept_all)
        u.pull()
        u.close()
        net, grid = app.state.live.context("monaco")
        assert grid is not None and len(net) == 64
        yield {
            "url": url,
            "tokens": tokens,
            "live": app.state.live,
            "store": store,
            "fleet": fleet,
            "net": net,
            "in_cell": (grid[0] + 0.5 * grid[2], grid[1] + 0.5 * grid[3]),
        }


def _post(url: str, token: str | None, body: bytes) -> httpx.Response:
    h = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{url}/v1/live/heartbeat", content=body, headers=h)


def test_heartbeat_endpoint_checks_everything(live_fleet: dict[str, Any]) -> None:
    url, tok, live = live_fleet["url"], live_fleet["tokens"], live_fleet["live"]
    now = int(time.time())
    good = encode_heartbeat(_hb(t=now))
    assert _post(url, None, good).status_code == 401
    assert _post(url, "nope", good).status_code == 401
    assert _post(url, tok["ana"], good).status_code == 403
    assert _post(url, tok["cab-1"], b"\xc1junk").status_code == 400
    assert _post(url, tok["cab-1"], encode_heartbeat(_hb(t=now, area="nowhere"))).status_code == 400
    stale = _post(url, tok["cab-1"], encode_heartbeat(_hb(t=now - 130)))
    assert stale.status_code == 422 and "old" in stale.json()["error"]
    ahead = _post(url, tok["cab-1"], encode_heartbeat(_hb(t=now + 300)))
    assert ahead.status_code == 422 and "ahead" in ahead.json()["error"]
    assert _post(url, tok["cab-1"], b"\x90" * 5000).status_code == 413
    assert _hb(t=now) not in live.inputs_now("monaco")[0]  # nothing was kept
    r = _post(url, tok["cab-1"], good)
    assert r.status_code == 200, r.text
    assert msgpack.unpackb(r.content)["events_acked"] == 0
    assert _hb(t=now) in live.inputs_now("monaco")[0]


def _client(live_fleet: dict[str, Any], tmp: Path, **kw: Any) -> SnapshotClient:
    return SnapshotClient(
        live_fleet["url"],
        "monaco",
        live_fleet["tokens"]["cab-1"],
        TrustSource(live_fleet["store"].tuf_dir),
        archive=SnapshotArchive(tmp / "live"),
        **kw,
    )


def test_cab_round_trip_304_and_latest(live_fleet: dict[str, Any], tmp_path: Path) -> None:
    url, tok, live = live_fleet["url"], live_fleet["tokens"], live_fleet["live"]
    net, (lon, lat) = live_fleet["net"], live_fleet["in_cell"]
    now = time.time()
    hc = HeartbeatClient(url, tok["cab-2"], "monaco", net)
    hc.record_event(PICKUP, now - 20, lon, lat)
    res = hc.send(t_s=now, link=7, lon=lon, lat=lat, vacant=True, route=[8, 9])
    assert res.status == "accepted" and res.events_acked == 1 and not hc.pending_events()
    # the event arrives again (a lost acknowledgement): counted once
    again_hb = _hb(t=int(now), link=7, network=network_tag(net), lon=lon, lat=lat, route=(8, 9),
                   events=(MeterEvent(PICKUP, int(now - 20), lon, lat),))  # fmt: skip
    assert _post(url, tok["cab-2"], encode_heartbeat(again_hb)).status_code == 200
    live.rebuild()
    cab = _client(live_fleet, tmp_path)
    assert cab.latest(now) is None
    out = cab.fetch()
    assert out.status == "accepted", out
    snap = cab.latest(time.time())
    assert snap is not None and snap.version == out.version
    assert snap.link_counts([7, 8, 9])[0].tolist() == [1, 0, 0]
    assert snap.link_counts([7, 8, 9])[1].tolist() == [0, 1, 1]
    assert snap.network == net and snap.pickups.tolist() == [[1, 1, 1]]
    assert cab.fetch().status == "not_modified"  # If-None-Match: the same version
    live.rebuild()
    assert cab.fetch().status == "accepted" and cab.last_version > out.version
    # stored for replay, once per version, and a new client starts from the highest one
    assert SnapshotArchive(tmp_path / "live").get("monaco", version=snap.version).version
    again = _client(live_fleet, tmp_path)  # a restart: the archive's newest is the floor
    assert again.last_version == cab.last_version
    newest = again.latest(time.time())
    assert newest is not None and newest.version == cab.last_version
    assert again.fetch().status == "not_modified"
    assert cab.latest(snap.expires_s + 61) is None  # expired while offline: no snapshot
    # server down: unreachable, the last good snapshot stays
    cab.url = "http://127.0.0.1:9/v1/live/snapshot"
    out = cab.fetch()
    assert (out.status, out.reason) == ("unreachable", LIVE_UNREACHABLE)
    newest = cab.latest(time.time())
    assert newest is not None and newest.version == cab.last_version
    hc.close()
    cab.close()
    again.close()


def test_faults_keep_the_last_good_snapshot(live_fleet: dict[str, Any], tmp_path: Path) -> None:
    """Forged, replayed, malformed, expired, a wrong clock: refused with the reason, the
    last good snapshot stays; server down: unreachable, the same; nothing raises."""
    live, fleet = live_fleet["live"], live_fleet["fleet"]
    live.rebuild()
    clock = [time.time()]
    cab = _client(live_fleet, tmp_path, clock=lambda: clock[0])
    assert cab.fetch().status == "accepted"
    good = cab.latest(clock[0])
    assert good is not None

    def serve_instead(data: bytes) -> None:
        with live._lock:
            live._areas["monaco"].signed = data
            live._areas["monaco"].version += 1

    v = good.version
    cases = [
        (_signed(fleet.repo, v + 5, clock[0], CryptoSigner.generate_ed25519()), LIVE_BAD_SIGNATURE),
        (_signed(fleet.repo, v - 1, clock[0]), LIVE_STALE_VERSION),
        (b"not a snapshot", LIVE_MALFORMED),
        (_signed(fleet.repo, v + 6, clock[0] - 600), LIVE_EXPIRED),
    ]
    for data, reason in cases:
        serve_instead(data)
        out = cab.fetch()
        assert (out.status, out.reason) == ("refused", reason)
        assert cab.latest(clock[0]) is good and cab.last_reason == reason
    serve_instead(_signed(fleet.repo, v + 7, clock[0]))
    clock[0] += 300  # the cab's clock runs 5 minutes ahead
    assert cab.fetch().reason == LIVE_EXPIRED
    clock[0] -= 600  # 5 minutes behind
    assert cab.fetch().reason == LIVE_NOT_YET_VALID
    clock[0] += 300
    assert cab.fetch().status == "accepted"
    cab.close()
    # server down
    port = int(live_fleet["url"].rsplit(":", 1)[1])
    down = SnapshotClient(
        f"http://127.0.0.1:{port + 1 if port < 65535 else 1}",
        "monaco",
        "t",
        TrustSource(live_fleet["store"].tuf_dir),
        config=LiveClientConfig(timeout_s=1),
    )
    out = down.fetch()
    assert (out.status, out.reason) == ("unreachable", LIVE_UNREACHABLE)
    assert down.latest(time.time()) is None
    down.close()
    hb = HeartbeatClient(f"http://127.0.0.1:{port + 1}", "t", "monaco", NET, timeout_s=1)
    hb.record_event(PICKUP, time.time(), 7.42, 43.74)
    res = hb.send(t_s=time.time(), link=1, lon=7.42, lat=43.74, vacant=True)
    assert res.status == "unreachable" and len(hb.pending_events()) == 1  # kept for the next
    stale = hb.send(t_s=time.time() - 200, link=1, lon=7.42, lat=43.74, vacant=True)
    assert stale.status == "stale" and stale.bytes_sent == 0  # never sent, never retried
    hb.close()


def test_no_trusted_metadata_is_refused_not_raised(
    live_fleet: dict[str, Any], tmp_path: Path
) -> None:
    live_fleet["live"].rebuild()
    cab = SnapshotClient(
        live_fleet["url"], "monaco", live_fleet["tokens"]["cab-1"], TrustSource(tmp_path / "none")
    )
    out = cab.fetch()
    assert (out.status, out.reason) == ("refused", LIVE_NO_TRUST)
    cab.close()


def test_background_fetch_feeds_latest(live_fleet: dict[str, Any], tmp_path: Path) -> None:
    live_fleet["live"].rebuild()
    cab = _client(live_fleet, tmp_path, config=LiveClientConfig(every_s=0.05, jitter_s=0.01))
    cab.start()
    try:
        for _ in range(400):
            if cab.latest(time.time()) is not None:
                break
            time.sleep(0.025)
        assert cab.latest(time.time()) is not None
    finally:
        cab.close()


def test_snapshot_endpoint(live_fleet: dict[str, Any]) -> None:
    url, tok = live_fleet["url"], live_fleet["tokens"]
    g = f"{url}/v1/live/snapshot"
    assert httpx.get(g, params={"area": "monaco"}).status_code == 401
    h = {"authorization": f"Bearer {tok['ana']}"}
    assert httpx.get(g, params={"area": "nowhere"}, headers=h).status_code == 404
    live_fleet["live"].rebuild()
    r = httpx.get(g, params={"area": "monaco"}, headers=h)
    assert r.status_code == 200 and r.headers["etag"].strip('"').isdigit()
    r2 = httpx.get(g, params={"area": "monaco"}, headers={**h, "if-none-match": r.headers["etag"]})
    assert r2.status_code == 304 and r2.content == b""


def test_real_fleet_serve_process(tmp_path: Path, bundle_pair: dict[str, Any]) -> None:
    """``nagashi fleet serve`` as its own process: a cab's heartbeat is taken, the background
    task builds the area's snapshot, the cab verifies it through the root it was provisioned
    with; after ``fleet keys rotate --role live`` (root offline) the cab refuses the new
    key's snapshot until its next metadata refresh, then takes it."""
    from tests.sync.test_serve_bounds import _cli, fleet_serve

    root = tmp_path / "fleet"
    repo = FleetRepository(root)
    repo.init(utcnow())
    repo.publish(bundle_pair["v1"].path, "monaco", utcnow())
    storage = SqliteLogStorage(root / "fleet.sqlite")
    token = storage.add_token("vehicle", "cab-1", 0.0)
    storage.close()
    trusted = repo.trusted_root_path().read_bytes()
    with fleet_serve(root) as url:
        store = BundleStore(tmp_path / "device")
        Updater(store, PullConfig(url, "monaco"), trusted, health_check=accept_all).pull()
        hc = HeartbeatClient(url, token, "monaco", "cd" * 32)
        assert hc.send(t_s=time.time(), link=3, lon=7.42, lat=43.73, vacant=True).status == (
            "accepted"
        )
        hc.close()
        cab = SnapshotClient(url, "monaco", token, TrustSource(store.tuf_dir))
        for _ in range(200):  # the first build runs as the first live request arrives
            out = cab.fetch()
            if out.status != "unreachable":
                break
            time.sleep(0.05)
        assert out.status == "accepted", out
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        rot = subprocess.run(
            _cli("fleet", "keys", "rotate", "--role", "live", "--root", str(root)),
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        assert rot.returncode == 0 and "rotated the live key" in rot.stdout, rot.stderr
        new = repo.live_signer()
        assert new is not None
        data = _signed(repo, cab.last_version + 1, time.time(), signer=new)
        trust = TrustSource(store.tuf_dir)
        with pytest.raises(LiveRefusedError) as e:
            verify_snapshot(data, trust.current(), time.time(), area="monaco")
        assert e.value.reason == LIVE_BAD_SIGNATURE  # the cab has the old targets
        Updater(store, PullConfig(url, "monaco"), trusted, health_check=accept_all).pull()
        verify_snapshot(data, trust.current(), time.time(), area="monaco")  # re-read, taken
        cab.close()


def test_no_live_key_is_503_with_the_remedy(tmp_path: Path) -> None:
    repo = FleetRepository(tmp_path / "f")
    repo.init(utcnow())
    (repo.keys_dir / "live.pem").unlink()
    storage = SqliteLogStorage(repo.root / "fleet.sqlite")
    token = storage.add_token("engineer", "ana", 0.0)
    repo.published_path.write_text('{"x": {"files": {}}}')  # an area (its bundle irrelevant)
    app = create_app(repo.root, storage=storage)
    with run_server(app) as url:
        g = f"{url}/v1/live/snapshot"
        h = {"authorization": f"Bearer {token}"}
        assert app.state.live.rebuild() == {}
        r = httpx.get(g, params={"area": "x"}, headers=h)
        assert r.status_code == 503 and "rotate --role live" in r.json()["error"]
