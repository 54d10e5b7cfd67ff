"""The fleet's live layer as one tick sees it, and the tick's view of the fleet around the cab.

:class:`LiveInput` is the tick input (``TickInputs.live``): the verified snapshot the runtime
took from the snapshot thread (or replay took back from the archive), its age and this cab's
own last heartbeat. :func:`tick_fleet` turns it, with the bundle's supply prior, into the
:class:`agent.planner.FleetView` the planner uses. Pure: no clock, no network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from agent.bundle import LoadedBundle
from agent.planner import FleetView, fleet_view
from agent.planner.fleet import SnapshotCounts
from tiles import Graph

__all__ = ["LIVE_NO_SNAPSHOT", "LiveInput", "LiveSnapshot", "tick_fleet"]

#: the live layer is on but the cab holds no snapshot yet (none fetched, or none accepted)
LIVE_NO_SNAPSHOT = "LIVE_NO_SNAPSHOT"


class LiveSnapshot(SnapshotCounts, Protocol):
    """What a tick reads of a :class:`sync.live.Snapshot` (duck-typed: importing the agent
    must not import the sync client, tuf or httpx): what the planner reads
    (:class:`agent.planner.fleet.SnapshotCounts`), and its area and road network."""

    @property
    def area(self) -> str: ...
    @property
    def network(self) -> str: ...

    # read by tick_recent when present (getattr): ``grid`` (min_lon, min_lat, dlon, dlat,
    # ncols, nrows) or None, ``cell_ids`` sorted cells, ``pickups`` (len(cell_ids), 3)


@dataclass(frozen=True)
class LiveInput:
    """The fleet's live layer as one tick sees it (the runtime takes it from the snapshot
    thread without waiting; replay takes the snapshot back from the archive)."""

    area: str
    #: the fresh, verified snapshot this tick plans with (None when none is fresh: offline,
    #: expired, refused); the log names it by ``area``, ``version`` and ``sha256``
    snapshot: LiveSnapshot | None = None
    #: its age at the tick, seconds by the cab's clock (the clock its ``built_s`` is on)
    age_s: float = 0.0
    #: the link and route (global edge ids) of this cab's last heartbeat the snapshot counted:
    #: subtracted, the cab does not see itself (-1 / () when none)
    own_link: int = -1
    own_route: tuple[int, ...] = ()
    #: why no snapshot is fresh, or the refusal of the last fetch while an older snapshot is
    #: still used (a ``LIVE_*`` code of sync.live, or :data:`LIVE_NO_SNAPSHOT`; "" when fine)
    reason: str = ""

    def to_record(self) -> dict[str, Any]:
        s = self.snapshot
        return {
            "area": self.area,
            "version": None if s is None else int(s.version),
            "sha256": None if s is None else str(s.sha256),
            "age_s": self.age_s,
            "own_link": self.own_link,
            "own_route": list(self.own_route),
            "reason": self.reason,
        }


def tick_fleet(
    lb: LoadedBundle, graph: Graph, minute_of_week: float, live: LiveInput | None
) -> tuple[FleetView, str]:
    """The tick's :class:`FleetView` on ``graph`` and an error text ("" when none): the live
    snapshot (without this cab's own heartbeat) when one is fresh, with the bundle's supply
    prior (``LoadedBundle.supply``, when the bundle ships one) as the background; the prior
    alone without a snapshot; nothing without either. A prior that cannot be read for this
    tick is left out (the error says why), never a reason to stop planning."""
    prior: npt.NDArray[np.float64] | None = None
    error = ""
    supply = getattr(lb, "supply", None)
    if supply is not None:
        try:
            prior = np.asarray(supply.rates(graph.edge_id, minute_of_week), dtype=np.float64)
            if prior.shape != (graph.n,):
                raise ValueError(f"{prior.shape} rates for {graph.n} links")
        except (ValueError, TypeError, IndexError) as e:
            prior, error = None, f"supply prior: {e}"
    snap = None if live is None else live.snapshot
    if snap is None or live is None:
        return fleet_view(graph, now_s=0.0, prior_per_h=prior), error
    view = fleet_view(
        graph,
        now_s=float(snap.built_s) + max(float(live.age_s), 0.0),
        snapshot=snap,
        own_link=live.own_link,
        own_route=live.own_route,
        prior_per_h=prior,
    )
    return view, error
