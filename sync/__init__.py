"""Bundles (manifest, build, verify, activate, roll back), the fleet pull client and the log outbox.

May import :mod:`tiles` and :mod:`models` (health checks). The fleet server lives in
:mod:`sync.server` and is imported only by ``nagashi fleet serve`` (the ``server`` extra).
"""

from sync.bundle import Bundle, BundleInputs, FileEntry, build_bundle
from sync.client import PullConfig, PullResult, Updater, pull_reporting_health
from sync.errors import (
    BundleInputError,
    BundleVerifyError,
    HealthCheckError,
    ManifestError,
    SyncAuthError,
    SyncDataError,
    SyncError,
    SyncStorageError,
    SyncTransportError,
    UnsafeNameError,
    UpdateRejectedError,
)
from sync.fetcher import FetchConfig, HttpxFetcher
from sync.health import default_health_check, probe_onnx
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
from sync.names import check_bundle_id, check_file_name
from sync.outbox import Outbox, OutboxConfig, OutboxRecord
from sync.repository import FleetRepository, PublishResult, RepoConfig
from sync.store import BundleStore, HealthCheck, Pointer

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
    "HttpxFetcher",
    "LogClient",
    "LogClientConfig",
    "LogRecord",
    "LogUploader",
    "ManifestError",
    "Outbox",
    "OutboxConfig",
    "OutboxRecord",
    "Pointer",
    "PublishResult",
    "PullConfig",
    "PullResult",
    "RepoConfig",
    "RetryConfig",
    "SyncAuthError",
    "SyncDataError",
    "SyncError",
    "SyncStorageError",
    "SyncTransportError",
    "UnsafeNameError",
    "UpdateRejectedError",
    "Updater",
    "VehicleLogs",
    "build_bundle",
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
]
