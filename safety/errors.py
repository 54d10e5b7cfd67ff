"""Errors of the safety layer.

The gate itself never raises (every failure becomes an ``INTERNAL_ERROR`` fallback); these are
for callers that build inputs or read logs:

* :class:`SafetyInputError` -- a configuration value or input the caller built is unusable
  (business area that is not a polygon): fix the input.
* :class:`SafetyLogError` -- a trip-log record cannot be read as a safety verdict: skip it.
"""

from __future__ import annotations


class SafetyError(Exception):
    """Root of every error raised by :mod:`safety`."""


class SafetyInputError(SafetyError):
    """An input or configuration value handed to safety/ is unusable."""


class SafetyLogError(SafetyError):
    """A logged record is not a readable safety verdict."""
