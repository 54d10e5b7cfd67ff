"""Errors of the road-tile layer.

Families, by what the caller does next:

* :class:`TilesDataError` -- the input (an OSM extract, a tile database) is unusable: reject
  it and keep whatever was there before.
* :class:`NoRouteError` / :class:`NoMatchError` -- a well-formed query has no answer (no path,
  no road near the fix): the caller falls back (safety/ shows "follow the road").
"""

from __future__ import annotations


class TilesError(Exception):
    """Root of every error raised by :mod:`tiles`."""


class TilesDataError(TilesError):
    """An OSM extract or a tile database is missing, malformed or empty."""


class NoRouteError(TilesError):
    """No legal path connects the two places."""


class NoMatchError(TilesError):
    """No road link lies near enough to a GPS fix."""
