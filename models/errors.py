"""Errors of the demand layer.

* :class:`DemandDataError` -- a demand directory, trip file or model file is missing, corrupt or
  inconsistent with the road tiles: reject it (keep the old bundle, or fall back to statistics).
* :class:`ModelOutputError` -- the ONNX model answered, but with NaN, negative or absurd values:
  the caller (safety/) falls back to statistical demand for this tick.
"""

from __future__ import annotations


class ModelsError(Exception):
    """Root of every error raised by :mod:`models`."""


class DemandDataError(ModelsError):
    """Demand inputs or files are unusable."""


class ModelOutputError(ModelsError):
    """A demand model returned values that cannot be used."""
