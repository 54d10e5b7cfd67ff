"""Trip log: durable appends, exact bytes, rotation, recovery after a torn tail, outbox hand-off."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from agent.errors import TripLogError
from agent.triplog import (
    SCHEMA_VERSION,
    ReadReport,
    TripLog,
    TripLogConfig,
    log_files,
    pack,
    read_records,
)
from models import TickDemand


def _demand(seed: int) -> TickDemand:
    rng = np.random.default_rng(seed)
    n = 40
    return TickDemand(
        edge_id=np.arange(n, dtype=np.int32) * 3,
        slot_minute_of_week=np.array([1110, 1140], dtype=np.int64),
        pickups_per_h=rng.random((2, n), dtype=np.float32) * 7,
        fare_mean=rng.random(n, dtype=np.float32) * 20,
        trip_duration_s=rng.random(n, dtype=np.float32) * 900,
        cell=rng.integers(0, 3, n).astype(np.int32),
        dropoff=rng.random((3, 4), dtype=np.float32),
        source="statistical:test",
    )


def test_records_roundtrip_exactly_with_unknown_fields(tmp_path: Path) -> None:
    got: list[tuple[int, bytes]] = []
    tl = TripLog(TripLogConfig(tmp_path), sink=lambda seq, data: got.append((seq, data)))
    demand = _demand(1)
    for i in range(5):
        seq = tl.append(
            {
                "kind": "tick",
                "time_s": 1433284200.0 + i / 3,
                "demand": demand.to_record(),
                "future_field": {"x": np.float32(0.1), "n": np.int64(3), "ok": np.bool_(True)},
            }
        )
        assert seq == i
    tl.close()
    recs = list(read_records(tmp_path))
    assert [r["seq"] for r in recs] == list(range(5))
    assert all(r["schema_version"] == SCHEMA_VERSION for r in recs)
    assert recs[1]["time_s"] == 1433284200.0 + 1 / 3  # float64 exact
    assert recs[0]["future_field"] == {"x": float(np.float32(0.1)), "n": 3, "ok": True}
    back = TickDemand.from_record(recs[4]["demand"])
    assert back.pickups_per_h.tobytes() == demand.pickups_per_h.tobytes()
    assert back.dropoff.shape == (3, 4)
    # the outbox got exactly the bytes in the file
    assert [s for s, _ in got] == list(range(5))
    stream = b"".join(d for _, d in got)
    assert stream == b"".join(p.read_bytes() for p in log_files(tmp_path))
    assert msgpack.unpackb(got[2][1], raw=False)["seq"] == 2


def test_rotation_by_size_and_numbering_across_restarts(tmp_path: Path) -> None:
    cfg = TripLogConfig(tmp_path, max_file_bytes=2000)
    tl = TripLog(cfg)
    for i in range(30):
        tl.append({"kind": "tick", "time_s": float(i), "pad": b"x" * 300})
    tl.close()
    files = log_files(tmp_path)
    assert len(files) >= 5
    assert all(f.stat().st_size < 2000 + 400 for f in files)
    tl2 = TripLog(cfg)
    assert tl2.next_seq == 30
    tl2.append({"kind": "stop", "time_s": 31.0})
    tl2.close()
    seqs = [r["seq"] for r in read_records(tmp_path)]
    assert seqs == list(range(31))
    assert tl2.status()["records_written"] == 1


def test_torn_tail_is_cut_on_restart_and_reported_on_read(tmp_path: Path) -> None:
    cfg = TripLogConfig(tmp_path)
    tl = TripLog(cfg)
    for i in range(3):
        tl.append({"kind": "tick", "time_s": float(i)})
    tl.close()
    f = log_files(tmp_path)[-1]
    whole = pack({"schema_version": 1, "seq": 3, "kind": "tick", "time_s": 3.0})
    with open(f, "ab") as fh:
        fh.write(whole[: len(whole) // 2])  # power lost mid-append
    report = ReadReport()
    assert len(list(read_records(tmp_path, report))) == 3
    assert report.torn_tails and report.torn_tails[0][0] == f
    tl2 = TripLog(cfg)
    assert tl2.next_seq == 3
    tl2.append({"kind": "tick", "time_s": 3.0})
    tl2.close()
    report2 = ReadReport()
    assert [r["seq"] for r in read_records(tmp_path, report2)] == [0, 1, 2, 3]
    assert report2.torn_tails == []


def test_failures_are_loud(tmp_path: Path) -> None:
    def broken_sink(seq: int, data: bytes) -> None:
        raise RuntimeError("outbox full")

    tl = TripLog(TripLogConfig(tmp_path), sink=broken_sink)
    tl.append({"kind": "tick", "time_s": 0.0})
    assert tl.status()["sink_errors"] == 1
    assert len(list(read_records(tmp_path))) == 1  # still in the file
    with pytest.raises(TripLogError, match="convert it explicitly"):
        tl.append({"kind": "tick", "arr": np.zeros(3)})
    assert tl._fd is not None
    os.close(tl._fd)  # the disk goes away under the writer
    with pytest.raises(TripLogError, match="cannot write"):
        tl.append({"kind": "tick", "time_s": 1.0})
    tl._fd = None
    assert tl.next_seq == 1
    with pytest.raises(TripLogError, match="not found"):
        list(read_records(tmp_path / "missing.msgpack"))


def test_total_size_cap_deletes_oldest_loudly(tmp_path: Path, caplog: Any) -> None:
    cfg = TripLogConfig(tmp_path, max_file_bytes=1000, max_total_bytes=3000)
    tl = TripLog(cfg)
    for i in range(40):
        tl.append({"kind": "tick", "time_s": float(i), "pad": b"y" * 200})
    tl.close()
    assert tl.files_deleted > 0
    assert "deleting the oldest file" in caplog.text
    assert sum(f.stat().st_size for f in log_files(tmp_path)) <= 3000 + 1300
