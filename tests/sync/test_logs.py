"""The log outbox (durable, bounded, drop-oldest with a persistent counter) and the fleet
server's log API (per-vehicle tokens, size cap, idempotent by (vehicle_id, seq))."""

from __future__ import annotations

import gzip
import random
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync import (
    LogClient,
    LogClientConfig,
    LogUploader,
    Outbox,
    OutboxConfig,
    RetryConfig,
    SyncAuthError,
    SyncDataError,
    SyncTransportError,
    fetch_logs,
)
from sync.server import ServerConfig, create_app
from tests.sync.conftest import run_server


def test_outbox_survives_reopen_and_deletes_only_acked(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with Outbox(path) as ob:
        seqs = ob.append_many(({"i": i}, 100.0 + i) for i in range(10))
        assert seqs == list(range(1, 11))
        assert ob.ack([2, 3, 99]) == 2
    with Outbox(path) as ob:
        pend = ob.pending()
        assert [r.seq for r in pend] == [1, 4, 5, 6, 7, 8, 9, 10]
        assert pend[0].payload() == {"i": 0} and pend[0].t_s == 100.0
        assert ob.append({"i": 10}, 200.0) == 11  # sequence numbers are never reused
        ob.ack(r.seq for r in ob.pending())
        assert ob.stats() == {"records": 0, "bytes": 0, "dropped_total": 0}
        assert ob.append({"i": 11}, 201.0) == 12
    conn_mode = __import__("sqlite3").connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert conn_mode == "wal"


def test_outbox_drops_oldest_and_counts_persistently(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    cfg = OutboxConfig(max_records=5)
    with Outbox(path, cfg) as ob:
        ob.append_many(({"i": i}, float(i)) for i in range(8))
        assert [r.payload()["i"] for r in ob.pending()] == [3, 4, 5, 6, 7]
        assert ob.dropped_total == 3
    with Outbox(path, cfg) as ob:
        assert ob.dropped_total == 3
        ob.append({"i": 8}, 8.0)
        assert ob.dropped_total == 4
        assert ob.stats()["records"] == 5


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 400), min_size=1, max_size=40),
    max_bytes=st.integers(500, 3000),
)
def test_outbox_byte_bound_invariant(
    tmp_path_factory: Any, sizes: list[int], max_bytes: int
) -> None:
    path = tmp_path_factory.mktemp("ob") / "o.sqlite"
    with Outbox(path, OutboxConfig(max_bytes=max_bytes)) as ob:
        for n, size in enumerate(sizes):
            ob.append(b"x" * size, float(n))
            st_ = ob.stats()
            assert st_["bytes"] <= max_bytes
            kept = ob.pending(max_records=10_000, max_bytes=10**9)
            assert st_["records"] == len(kept)
            assert st_["bytes"] == sum(len(r.data) for r in kept)
            assert st_["dropped_total"] + len(kept) == n + 1  # nothing lost silently
            assert [r.seq for r in kept] == sorted(r.seq for r in kept)


def test_outbox_refuses_unpackable_or_huge_records(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", OutboxConfig(max_record_bytes=100)) as ob:
        with pytest.raises(SyncDataError, match="msgpack"):
            ob.append(object(), 0.0)
        with pytest.raises(SyncDataError, match="exceeds"):
            ob.append(b"x" * 200, 0.0)
        assert ob.stats()["records"] == 0


@pytest.fixture
def fleet_logs(tmp_path: Path, log_backend: Any) -> Any:
    """The fleet app on loopback over each log storage back end (SQLite, PostgreSQL)."""
    root = tmp_path / "fleet"
    storage = log_backend(root)
    tokens = {
        "cab-1": storage.add_token("vehicle", "cab-1", 0.0),
        "cab-2": storage.add_token("vehicle", "cab-2", 0.0),
        "ana": storage.add_token("engineer", "ana", 0.0),
    }
    app = create_app(root, ServerConfig(max_batch_bytes=64 * 1024), storage=storage)
    with run_server(app) as url:
        yield url, tokens, storage


def _batch(vehicle: str, seqs: list[int], dropped: int = 0) -> bytes:
    packed: bytes = msgpack.packb(
        {
            "schema_version": 1,
            "vehicle_id": vehicle,
            "dropped_total": dropped,
            "records": [{"seq": s, "t_s": float(s), "data": b"r%d" % s} for s in seqs],
        },
        use_bin_type=True,
    )
    return packed


def _post(url: str, token: str, body: bytes) -> httpx.Response:
    return httpx.post(f"{url}/v1/logs", content=body, headers={"Authorization": f"Bearer {token}"})


def test_resending_a_batch_never_duplicates(fleet_logs: Any) -> None:
    url, tokens, storage = fleet_logs
    r1 = msgpack.unpackb(_post(url, tokens["cab-1"], _batch("cab-1", [1, 2, 3])).content)
    r2 = msgpack.unpackb(_post(url, tokens["cab-1"], _batch("cab-1", [2, 3, 4])).content)
    assert (r1["inserted"], r1["duplicates"]) == (3, 0)
    assert (r2["inserted"], r2["duplicates"]) == (1, 2) and r2["acked"] == [2, 3, 4]
    got = fetch_logs(url, tokens["ana"], "cab-1", since_s=0.0)
    assert [(r.seq, r.data) for r in got] == [(s, b"r%d" % s) for s in (1, 2, 3, 4)]
    assert [r.seq for r in fetch_logs(url, tokens["ana"], "cab-1", since_s=3.0)] == [3, 4]
    assert storage.count("cab-1") == 4


def test_vehicle_tokens_are_confined(fleet_logs: Any) -> None:
    url, tokens, _ = fleet_logs
    # uploading as another vehicle
    assert _post(url, tokens["cab-2"], _batch("cab-1", [1])).status_code == 403
    # reading logs: neither another vehicle's nor (vehicles read nothing) its own
    for vid in ("cab-1", "cab-2"):
        with pytest.raises(SyncAuthError, match="403"):
            fetch_logs(url, tokens["cab-2"], vid, since_s=0.0)
    # engineers do not upload; unknown or missing tokens get 401
    assert _post(url, tokens["ana"], _batch("ana", [1])).status_code == 403
    assert _post(url, "not-a-token", _batch("cab-1", [1])).status_code == 401
    assert httpx.post(f"{url}/v1/logs", content=_batch("cab-1", [1])).status_code == 401
    # no route publishes: the repository is read-only over HTTP, whatever the token
    auth = {"Authorization": f"Bearer {tokens['cab-1']}"}
    for path in ("/metadata/timestamp.json", "/targets/areas/x/index.json", "/metadata/"):
        for method in ("PUT", "POST", "DELETE"):
            assert httpx.request(method, url + path, headers=auth).status_code == 405


def test_batches_are_size_capped_and_validated(fleet_logs: Any) -> None:
    url, tokens, storage = fleet_logs
    big = msgpack.packb(
        {
            "schema_version": 1,
            "vehicle_id": "cab-1",
            "records": [{"seq": 1, "t_s": 1.0, "data": b"x" * 100_000}],
        }
    )
    assert _post(url, tokens["cab-1"], big).status_code == 413

    def chunks() -> Any:  # no Content-Length: the cap holds on the stream too
        for _ in range(20):
            yield b"\x00" * 8192

    r = httpx.post(
        f"{url}/v1/logs", content=chunks(), headers={"Authorization": f"Bearer {tokens['cab-1']}"}
    )
    assert r.status_code == 413
    assert _post(url, tokens["cab-1"], b"\xc1garbage").status_code == 400
    bad_seq = _batch("cab-1", [0])
    assert _post(url, tokens["cab-1"], bad_seq).status_code == 400
    assert storage.count("cab-1") == 0


def _post_gz(url: str, token: str, body: bytes, encoding: str = "gzip") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "Content-Encoding": encoding}
    return httpx.post(f"{url}/v1/logs", content=body, headers=headers)


def test_gzip_batches_are_inflated_within_the_cap(fleet_logs: Any) -> None:
    url, tokens, storage = fleet_logs
    ok = _post_gz(url, tokens["cab-1"], gzip.compress(_batch("cab-1", [1, 2])))
    assert ok.status_code == 200 and msgpack.unpackb(ok.content)["inserted"] == 2
    # 64 KiB cap: a 30 KB gzip body that inflates to 1 MB is refused, not inflated
    bomb = msgpack.packb(
        {"schema_version": 1, "vehicle_id": "cab-1", "records": [{"data": b"\0" * 1_000_000}]}
    )
    small = gzip.compress(bomb, 9)
    assert len(small) < 64 * 1024
    r = _post_gz(url, tokens["cab-1"], small)
    assert r.status_code == 413 and "uncompressed" in r.text
    assert _post_gz(url, tokens["cab-1"], b"\x1f\x8bnot gzip").status_code == 400
    truncated = gzip.compress(_batch("cab-1", [3]))[:-6]
    assert _post_gz(url, tokens["cab-1"], truncated).status_code == 400
    assert _post_gz(url, tokens["cab-1"], _batch("cab-1", [3]), "br").status_code == 415
    assert storage.count("cab-1") == 2


def test_uploads_are_gzip_on_the_wire_and_stored_as_sent(tmp_path: Path) -> None:
    """What the cab sends: a gzip body that inflates to the msgpack batch, the same bytes on a
    retry; and with ``gzip_level=0`` the plain batch."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        doc = msgpack.unpackb(
            gzip.decompress(request.content)
            if request.headers.get("content-encoding") == "gzip"
            else request.content
        )
        acked = [r["seq"] for r in doc["records"]]
        answer = {"schema_version": 1, "epoch": doc["epoch"], "acked": acked}
        return httpx.Response(200, content=msgpack.packb(answer))

    ob = Outbox(tmp_path / "o.sqlite")
    ob.append_many(({"lon": -73.98 + i * 1e-5, "kind": "tick"}, float(i)) for i in range(10))
    batch = ob.pending()
    for level, encoding in ((6, "gzip"), (0, None)):
        client = LogClient(
            "http://fleet.test",
            "t",
            LogClientConfig(gzip_level=level),
            client=httpx.Client(transport=httpx.MockTransport(handler)),
        )
        assert client.upload("cab-1", batch, 0, ob.epoch) == [r.seq for r in batch]
        assert client.upload("cab-1", batch, 0, ob.epoch) == [r.seq for r in batch]  # a retry
        first, again = seen[-2], seen[-1]
        assert first.headers.get("content-encoding") == encoding
        assert first.content == again.content
        client.close()
    gz, plain = seen[0].content, seen[-1].content
    assert gzip.decompress(gz) == plain and len(gz) < len(plain)


def test_uploader_drains_outbox_and_uploads_the_dropped_counter(
    fleet_logs: Any, tmp_path: Path
) -> None:
    url, tokens, storage = fleet_logs
    ob = Outbox(tmp_path / "o.sqlite", OutboxConfig(max_records=50, batch_max_records=16))
    ob.append_many(({"i": i}, float(i)) for i in range(60))  # 10 dropped while offline
    client = LogClient(url, tokens["cab-1"])
    res = LogUploader(ob, client, "cab-1", sleep=lambda s: None).flush()
    client.close()
    assert res.sent == 50 and res.batches == 4 and res.failures == 0
    assert ob.stats()["records"] == 0
    assert storage.dropped_total("cab-1") == 10
    got = fetch_logs(url, tokens["ana"], "cab-1", since_s=0.0)
    assert [r.payload()["i"] for r in got] == list(range(10, 60))


def test_uploader_backs_off_with_jitter_and_keeps_records_when_offline(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite")
    ob.append_many(({"i": i}, float(i)) for i in range(5))
    delays: list[float] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no route to host", request=request)

    client = LogClient(
        "http://fleet.invalid", "t", client=httpx.Client(transport=httpx.MockTransport(refuse))
    )
    up = LogUploader(
        ob,
        client,
        "cab-1",
        RetryConfig(base_delay_s=1.0, max_delay_s=10.0, max_attempts=6),
        sleep=delays.append,
        rng=random.Random(3),
    )
    with pytest.raises(SyncTransportError, match="5 records kept"):
        up.flush()
    assert ob.stats()["records"] == 5
    assert len(delays) == 5
    caps = [1, 2, 4, 8, 10]
    for d, cap in zip(delays, caps, strict=True):
        assert cap / 2 <= d <= cap
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule
