"""Errors of the agent layer.

Families, by what the caller does next:

* :class:`GpsError` -- a GPS source cannot be opened or read (file missing, malformed trace,
  socket closed): the runtime reports it and keeps the last instruction (or stops a replay).
* :class:`TripLogError` -- a trip log cannot be written or read: writing errors are loud
  (a record is never dropped silently); reading errors name the file and the offset.
* :class:`BundleLoadError` -- the bundle directory is missing or unusable: keep the old one.
* :class:`ApiError` -- a bad request to the local HTTP API (becomes a 4xx JSON error).
* :class:`ReplayError` -- a logged decision cannot be recomputed (record or bundle missing).
"""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error raised by :mod:`agent`."""


class GpsError(AgentError):
    """A GPS source is missing, malformed or closed."""


class TripLogError(AgentError):
    """A trip log cannot be written durably, or a log file is unreadable."""


class BundleLoadError(AgentError):
    """A bundle directory is missing, incomplete or inconsistent."""


class ApiError(AgentError):
    """A request to the local HTTP API is malformed (HTTP 4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ReplayError(AgentError):
    """A logged decision cannot be recomputed."""
