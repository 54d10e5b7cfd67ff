"""Fetching a vehicle's trip logs from the fleet server (engineer credentials), into a file.

The records come back as the agent logged them (``sync.fetch_vehicle_logs``: every record of
the vehicle with ``t_s >= since``, in the order the server received them) and are written as one
trip-log file (a msgpack stream, atomically), which ``nagashi replay``, ``export`` and ``report``
read like a log copied off the cab. The file ends with one ``kind: "pull"`` record saying what
the pull could not bring: ``dropped_total``, the records the cab's outbox dropped at its bound
(oldest first) before they reached the server (``nagashi report slo`` reports it).
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


def pull_logs(
    server_url: str,
    token: str,
    vehicle_id: str,
    since_s: float,
    out: Path,
    *,
    client: httpx.Client | None = None,
    ca_file: str | None = None,
) -> dict[str, Any]:
    """Write the vehicle's records since ``since_s`` to ``out``; a summary of what came."""
    try:
        pulled = fetch_vehicle_logs(
            server_url, token, vehicle_id, since_s, client=client, ca_file=ca_file
        )
    except SyncError as e:
        raise TripLogError(f"cannot pull logs of {vehicle_id!r}: {e}") from e
    records = pulled.records
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
        "records": n_records,
        "dropped_total": pulled.dropped_total,
        "kinds": dict(sorted(kinds.items())),
        "first_seq": min(seqs) if seqs else None,
        "last_seq": max(seqs) if seqs else None,
        "undecodable": undecodable,
    }
