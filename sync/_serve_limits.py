"""The bounds of ``nagashi fleet serve`` (no dependencies: the CLI reads the defaults without
importing uvicorn). Enforced by :mod:`sync._serving`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServeLimits:
    """The bounds of ``nagashi fleet serve`` (README: "What the server bounds")."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: int = 5
    max_connections_per_ip: int = 32
    max_connections: int = 512  # uvicorn's limit_concurrency: 503 past it
    token_rate_per_s: float = 5.0
    token_burst: int = 100
    max_tracked_tokens: int = 100_000
