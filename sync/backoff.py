"""The one retry backoff of the project: capped exponential, with optional jitter.

Every retry loop uses it: the TUF fetcher's reconnects (``sync.fetcher``), the log uploader and
the log reader (``sync.logs``), and the agent's background sync steps (``agent.runtime``).
"""

from __future__ import annotations

import random

#: the exponent is clamped so that ``2 ** n`` never overflows a float
_MAX_DOUBLINGS = 60


def backoff_delay_s(
    failures: int, base_s: float, max_s: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait before retry number ``failures`` (1 for the first retry):
    ``cap = min(max_s, base_s * 2 ** (failures - 1))``. With ``rng``, drawn uniformly over the
    upper half ``[cap / 2, cap]`` (never zero, never above the cap: many clients retrying at once
    spread out); without, ``cap`` itself."""
    doublings = min(max(0, failures - 1), _MAX_DOUBLINGS)
    cap = min(max_s, base_s * (2.0**doublings))
    if rng is None:
        return float(cap)
    return float(cap / 2 + rng.uniform(0.0, cap / 2))
