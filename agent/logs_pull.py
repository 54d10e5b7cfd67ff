"""Fetching a vehicle's trip logs from the fleet server (engineer credentials), into a file.

The records come back as the agent logged them (``sync.fetch_logs``: every record of the
vehicle with ``t_s >= since``, in sequence order) and are written as one trip-log file (a
msgpack stream, atomically), which ``nagashi replay``, ``export`` and ``report`` read like a
log copied off the cab.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx

from agent.errors import TripLogError
from agent.triplog import pack
from sync import SyncError, fetch_logs
from tiles.fileio import atomic_write_bytes

log = logging.getLogger(__name__)


def pull_logs(
    server_url: str,
    token: str,
    vehicle_id: str,
    since_s: float,
    out: Path,
    *,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """Write the vehicle's records since ``since_s`` to ``out``; a summary of what came."""
    try:
        records = fetch_logs(server_url, token, vehicle_id, since_s, client=client)
    except SyncError as e:
        raise TripLogError(f"cannot pull logs of {vehicle_id!r}: {e}") from e
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
    atomic_write_bytes(out, b"".join(chunks))
    seqs = [r.seq for r in records]
    return {
        "out": str(out),
        "vehicle_id": vehicle_id,
        "records": len(chunks),
        "kinds": dict(sorted(kinds.items())),
        "first_seq": min(seqs) if seqs else None,
        "last_seq": max(seqs) if seqs else None,
        "undecodable": undecodable,
    }
