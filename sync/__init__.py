"""Bundles (manifest, build, verify, activate, roll back), the fleet pull client and the log outbox.

May import :mod:`tiles` and :mod:`models` (health checks). The live layer's cab side
(heartbeats up, signed live snapshots down) is :mod:`sync.live`. The fleet server lives in
:mod:`sync.server` and is imported only by ``nagashi fleet serve`` (the ``server`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sync.errors import (
    BundleInputError,
    BundleVerifyError,
    HealthCheckError,
    LiveInputError,
    LiveRefusedError,
    ManifestError,
    SyncAuthError,
    SyncDataError,
    SyncError,
    SyncStorageError,
    SyncTransportError,
    UnsafeNameError,
    UpdateRejectedError,
)
from sync.names import check_bundle_id, check_file_name
from tiles._lazy import lazy_attribute

if TYPE_CHECKING:  # the types, for mypy and editors; at run time see __getattr__
    from sync.bundle import Bundle, BundleInputs, FileEntry, build_bundle
    from sync.client import PullConfig, PullResult, Updater, pull_reporting_health
    from sync.fetcher import FetchConfig, HttpxFetcher
    from sync.health import default_health_check, probe_onnx
    from sync.live import (
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
        verify_snapshot,
    )
    from sync.logs import (
        FlushResult,
        LogClient,
        LogClientConfig,
        LogRecord,
        LogUploader,
        RetryConfig,
        VehicleLogs,
        fetch_logs,
        fetch_vehicle_logs,
    )
    from sync.manifest import Composed, compose, diff, manifest_hash
    from sync.outbox import Outbox, OutboxConfig, OutboxRecord
    from sync.repository import FleetRepository, PublishResult, RepoConfig
    from sync.store import BundleStore, HealthCheck, Pointer

_LAZY: dict[str, str] = {
    "pull_reporting_health": "sync.client",
    "Heartbeat": "sync.live",
    "HeartbeatClient": "sync.live",
    "LiveClientConfig": "sync.live",
    "LiveTrust": "sync.live",
    "MeterEvent": "sync.live",
    "Snapshot": "sync.live",
    "SnapshotArchive": "sync.live",
    "SnapshotClient": "sync.live",
    "TrustSource": "sync.live",
    "build_snapshot": "sync.live",
    "verify_snapshot": "sync.live",
    "Bundle": "sync.bundle",
    "BundleInputs": "sync.bundle",
    "BundleStore": "sync.store",
    "Composed": "sync.manifest",
    "FetchConfig": "sync.fetcher",
    "FileEntry": "sync.bundle",
    "FleetRepository": "sync.repository",
    "FlushResult": "sync.logs",
    "HealthCheck": "sync.store",
    "HttpxFetcher": "sync.fetcher",
    "LogClient": "sync.logs",
    "LogClientConfig": "sync.logs",
    "LogRecord": "sync.logs",
    "LogUploader": "sync.logs",
    "Outbox": "sync.outbox",
    "OutboxConfig": "sync.outbox",
    "OutboxRecord": "sync.outbox",
    "Pointer": "sync.store",
    "PublishResult": "sync.repository",
    "PullConfig": "sync.client",
    "PullResult": "sync.client",
    "RepoConfig": "sync.repository",
    "RetryConfig": "sync.logs",
    "Updater": "sync.client",
    "VehicleLogs": "sync.logs",
    "build_bundle": "sync.bundle",
    "compose": "sync.manifest",
    "default_health_check": "sync.health",
    "diff": "sync.manifest",
    "fetch_logs": "sync.logs",
    "fetch_vehicle_logs": "sync.logs",
    "manifest_hash": "sync.manifest",
    "probe_onnx": "sync.health",
}

__all__ = [
    "Bundle",
    "BundleInputError",
    "BundleInputs",
    "BundleStore",
    "BundleVerifyError",
    "Composed",
    "FetchConfig",
    "FileEntry",
    "FleetRepository",
    "FlushResult",
    "HealthCheck",
    "HealthCheckError",
    "Heartbeat",
    "HeartbeatClient",
    "HttpxFetcher",
    "LiveClientConfig",
    "LiveInputError",
    "LiveRefusedError",
    "LiveTrust",
    "LogClient",
    "LogClientConfig",
    "LogRecord",
    "LogUploader",
    "ManifestError",
    "MeterEvent",
    "Outbox",
    "OutboxConfig",
    "OutboxRecord",
    "Pointer",
    "PublishResult",
    "PullConfig",
    "PullResult",
    "RepoConfig",
    "RetryConfig",
    "Snapshot",
    "SnapshotArchive",
    "SnapshotClient",
    "SyncAuthError",
    "SyncDataError",
    "SyncError",
    "SyncStorageError",
    "SyncTransportError",
    "TrustSource",
    "UnsafeNameError",
    "UpdateRejectedError",
    "Updater",
    "VehicleLogs",
    "build_bundle",
    "build_snapshot",
    "check_bundle_id",
    "check_file_name",
    "compose",
    "default_health_check",
    "diff",
    "fetch_logs",
    "fetch_vehicle_logs",
    "manifest_hash",
    "probe_onnx",
    "pull_reporting_health",
    "verify_snapshot",
]


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, globals(), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
