"""The agent runtime's settings: :class:`AgentConfig`, and :class:`SyncSettings` for the fleet
server (both re-exported by :mod:`agent.runtime`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["AgentConfig", "SyncSettings"]


@dataclass(frozen=True)
class SyncSettings:
    """Fleet server access (the token is never logged). Intervals in seconds of wall time."""

    server_url: str
    token: str = field(repr=False)
    area: str | None = None  # bundle pulls need the area and the fleet's trusted root
    trusted_root: Path | None = None
    pull_interval_s: float = 300.0
    upload_interval_s: float = 30.0
    retry_max_s: float = 900.0  # backoff cap after repeated failures (never below an interval)
    shutdown_flush_attempts: int = 3
    ca_file: str | None = None  # PEM of the CA of the server's TLS certificate (None: system)
    cohort: str | None = None  # staged rollouts: this cab's cohort (local configuration only)
    # the live layer (agent.live): heartbeats, and snapshots when bundle sync gives the trust
    live: bool = True
    heartbeat_interval_s: float = 15.0
    snapshot_interval_s: float = 30.0
    keep_snapshots: int = 20_000  # archived for replay under <data dir>/live/ (about a week)


@dataclass(frozen=True)
class AgentConfig:
    """The runtime's settings (seconds, metres)."""

    bundle_dir: Path
    data_dir: Path  # trip logs and the outbox
    vehicle_id: str = "dev"
    locale: str = "en"
    timezone: str | None = None  # only when the bundle's params.yaml names none
    plan_interval_s: float = 5.0
    min_replan_interval_s: float = 1.0
    off_route_m: float = 40.0
    log_max_file_bytes: int = 8 * 1024 * 1024
    sync: SyncSettings | None = None
