"""The read-out's spread (``PlannerParams.route_spread_eps``): which of the near-best
successors a cab takes at a junction (:func:`agent.planner.readout.spread_next`), by a hash of
its salt and the link."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

__all__ = ["SPREAD_PERIOD_MIN", "Spread", "spread_hash", "spread_salt_of"]


@dataclass(frozen=True)
class Spread:
    """The read-out's spread (``PlannerParams.route_spread_eps``, docs/planner.md, "Offline
    cabs that spread"): at each junction, among the successors whose ``Q`` is within
    ``eps * |Q_best|`` of the best, the one :func:`spread_hash` of (``salt``, the link)
    names, instead of the best alone. ``salt`` is the cab's own (the agent's
    ``TickInputs.spread_salt``), so that cabs planning with the same values no longer drive the
    same corridors; where one successor is clearly better every cab still takes it."""

    eps: float
    salt: int

    def __post_init__(self) -> None:
        if not (0.0 <= self.eps <= 1.0):
            raise ValueError(f"the spread margin must be within [0, 1], not {self.eps!r}")
        if not (-(2**63) <= self.salt < 2**63):
            raise ValueError("the spread salt must be a signed 64-bit integer")


#: the spread's choices change every this many minutes (:func:`spread_hash`)
SPREAD_PERIOD_MIN = 10


def spread_hash(salt: int, edge_id: int, period: int) -> int:
    """A deterministic 64-bit hash of (the cab's salt, a link's global edge id, the period of
    :data:`SPREAD_PERIOD_MIN` minutes of the week): which of the near-best successors the cab
    takes there and then (reproducible from the tick's logged inputs, independent of the radius
    graph's local numbering). Within a period the next tick reads the same choices out again,
    so the route shown stays put; from one period to the next a cab that comes back to a
    junction may take another branch, so it does not drive one fixed circuit."""
    data = struct.pack("<3q", salt, edge_id, period)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def spread_salt_of(name: str) -> int:
    """A cab's spread salt from its name (the runtime's ``vehicle_id``): a signed 64-bit
    integer, the same on every run."""
    h = hashlib.blake2b(name.encode("utf-8"), digest_size=8, person=b"nagashi-spread").digest()
    return int.from_bytes(h, "little", signed=True)
