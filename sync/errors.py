"""Errors of the sync layer.

Families, split by what the caller does next:

* :class:`SyncDataError` -- bad data (a manifest, a bundle, TUF metadata, a downloaded file or a
  failed health check): reject it and **keep the current bundle**; retrying the same data is
  pointless until the server publishes something else.
* :class:`SyncTransportError` -- the network or the server is away or failing: keep the current
  bundle (and every log record) and **retry later**.
* :class:`SyncAuthError` -- a credential was refused: fix the configuration, do not hammer.
* :class:`SyncStorageError` -- local storage (outbox, bundle store, repository) is unusable.
"""

from __future__ import annotations


class SyncError(Exception):
    """Root of every error raised by :mod:`sync`."""


class SyncDataError(SyncError):
    """Bad data: reject it and keep the current bundle."""


class ManifestError(SyncDataError):
    """A version manifest is malformed (unknown key, missing version, wrong type)."""


class BundleInputError(SyncDataError):
    """An input of ``bundle build`` is missing or its version differs from the manifest."""


class BundleVerifyError(SyncDataError):
    """A bundle's files do not match its manifest (hash, size, missing or extra file)."""


class UpdateRejectedError(SyncDataError):
    """The fleet repository's metadata or a target failed TUF verification."""


class UnsafeNameError(SyncDataError):
    """A name taken from metadata (bundle id, chunk hash, file name) is not safe as a path."""


class HealthCheckError(SyncDataError):
    """A bundle on trial failed its health check (it was rolled back)."""

    bundle_id: str | None = None  # set by the pull that tried it


class LiveInputError(SyncDataError):
    """A live heartbeat or snapshot field is out of shape or bounds (the server answers 400)."""


class LiveRefusedError(SyncDataError):
    """A live snapshot was refused; ``reason`` is one of the ``sync.live.LIVE_*`` codes."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class SyncTransportError(SyncError):
    """The server is unreachable or failing: retry later."""


class SyncAuthError(SyncError):
    """A token was refused or lacks the right to do this."""


class SyncStorageError(SyncError):
    """Local storage (outbox, bundle store, repository files) is unusable."""
