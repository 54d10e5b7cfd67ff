"""Errors of the safety layer."""

from __future__ import annotations


class SafetyError(Exception):
    """Root of every error raised by :mod:`safety`."""
