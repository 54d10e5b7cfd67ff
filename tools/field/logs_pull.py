"""Fetching a vehicle's trip logs from the fleet server (engineer credentials), into a file.

The records come back as the agent logged them (``sync.fetch_vehicle_logs``, in the order the
server received them) and are written as one
trip-log file (a msgpack stream, atomically), which ``nagashi replay``, ``export`` and ``report``
read like a log copied off the cab. The file ends with one ``kind: "pull"`` record saying what
the pull could not bring: ``dropped_total``, the records the cab's outbox dropped at its bound
(oldest first) before they reached the server (``nagashi report slo`` reports it).

``since`` is read on one of two clocks (``clock``): ``gps``, the record's own time as the cab
logged it (its GPS clock: what a drive replayed from an old trace carries, 2015 for the demo
drive), filtered by the server on its index; or ``received``, when the server received the
record (its own clock), filtered here on everything the server holds for the vehicle.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx

from agent.errors import TripLogError
from agent.triplog import pack
from sync import SyncError, fetch_vehicle_logs
from tiles.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

#: the last record of a pulled file: what the server could not give
PULL_KIND = "pull"
#: the clocks ``since`` can be read on
CLOCKS = ("gps", "received")


def pull_logs(
    server_url: str,
    token: str,
    vehicle_id: str,
    since_s: float,
    out: Path,
    *,
    clock: str = "gps",
    client: httpx.Client | None = None,
    ca_file: str | None = None,
) -> dict[str, Any]:
    """Write the vehicle's records since ``since_s`` (on ``clock``) to ``out``; a summary of
    what came."""
    if clock not in CLOCKS:
        raise TripLogError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    server_since = since_s if clock == "gps" else 0.0  # received: the server has no index on it
    try:
        pulled = fetch_vehicle_logs(
            server_url, token, vehicle_id, server_since, client=client, ca_file=ca_file
        )
    except SyncError as e:
        raise TripLogError(f"cannot pull logs of {vehicle_id!r}: {e}") from e
    records = pulled.records
    if clock == "received":
        # a server that does not say when it received a record: kept (never lost silently)
        records = [r for r in records if r.received_s is None or r.received_s >= since_s]
    chunks: list[bytes] = []
    kinds: dict[str, int] = {}
    undecodable = 0
    for r in records:
        try:
            payload = r.payload()
        except ValueError:
            undecodable += 1
            continue
        if not isinstance(payload, dict):
            undecodable += 1
            continue
        kinds[str(payload.get("kind"))] = kinds.get(str(payload.get("kind")), 0) + 1
        chunks.append(pack(payload))
    if undecodable:
        log.warning("%d pulled record(s) were not trip-log maps and were left out", undecodable)
    n_records = len(chunks)
    chunks.append(
        pack(
            {
                "kind": PULL_KIND,
                "vehicle_id": vehicle_id,
                "since_s": float(since_s),
                "clock": clock,
                "records": n_records,
                "dropped_total": pulled.dropped_total,
            }
        )
    )
    atomic_write_bytes(out, b"".join(chunks))
    seqs = [r.seq for r in records]
    return {
        "out": str(out),
        "vehicle_id": vehicle_id,
        "since_s": float(since_s),
        "clock": clock,
        "records": n_records,
        "dropped_total": pulled.dropped_total,
        "kinds": dict(sorted(kinds.items())),
        "first_seq": min(seqs) if seqs else None,
        "last_seq": max(seqs) if seqs else None,
        "undecodable": undecodable,
    }
