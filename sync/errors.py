"""Errors of the sync layer."""

from __future__ import annotations


class SyncError(Exception):
    """Root of every error raised by :mod:`sync`."""
