"""One simulated shift's measures (:class:`RunResult`, made by :func:`tools.sim.engine.run_shift`;
the module docs there say what each one measures)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunResult:
    policy: str
    seed: int
    revenue_per_h: float  # per test cab
    pickups_per_h: float  # per test cab
    occupied_share: float  # occupied distance / distance driven (実車率)
    empty_km_per_pickup: float
    passengers: int
    served: int  # by the whole fleet
    stuck: int  # dead-end waits of the test cabs
    background_vacant_passes_per_link_h: float  # supply of the background fleet
    occupied_time_share: float  # test cabs: occupied time / shift time
    search_time_s: float  # test cabs: mean time from becoming vacant to a pickup
    wait_time_s: float  # passengers of the test cabs: mean time from appearing to the pickup
    expired: int  # passengers of the shift never picked up whose patience ran out in it
    taxis: int
    test_taxis: int
    fleet_revenue_per_h: float  # per cab of the whole fleet
    fleet_occupied_time_share: float  # the whole fleet
    trap_rescues: int = 0  # test cabs taken off a trapped link onto a free one (module docs)
    #: per test cab: (link, kind, time entered), kind CRUISE (the policy's choice), DROPOFF (driven
    #: occupied there), RELOCATE (back from a dead end), RESCUE (off a trap) or START
    tracks: tuple[tuple[tuple[int, str, float], ...], ...] = field(default=(), repr=False)
    pickups: tuple[int, ...] = field(default=(), repr=False)  # links of test cabs' pickups
    #: what the policy under test counted (its ``stats()``, e.g. nagashi-agent's ticks and
    #: fallbacks; empty when it counts nothing) and the CPU seconds of the shift (this
    #: process's, after the policies were made)
    policy_stats: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    cpu_s: float = field(default=0.0, repr=False, compare=False)

    def metrics(self) -> dict[str, float]:
        return {
            "revenue_per_h": self.revenue_per_h,
            "pickups_per_h": self.pickups_per_h,
            "occupied_share": self.occupied_share,
            "empty_km_per_pickup": self.empty_km_per_pickup,
            "served_share": self.served / self.passengers if self.passengers else 0.0,
            "occupied_time_share": self.occupied_time_share,
            "search_time_s": self.search_time_s,
            "wait_time_s": self.wait_time_s,
            "expired_share": self.expired / self.passengers if self.passengers else 0.0,
            "fleet_revenue_per_h": self.fleet_revenue_per_h,
            "fleet_occupied_time_share": self.fleet_occupied_time_share,
        }
