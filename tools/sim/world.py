"""The simulated world: road graph, demand rates, passengers (seeded), and their calibration.

Demand share. The DemandTable's rates are absolute: the whole yellow fleet's pickups in the
area (~8,000 an hour at midday in Midtown). A simulation of ``N`` cabs plays a share of that
world: ``share = N * trips_per_taxi_h / mean observed area rate over the shift``, with
``trips_per_taxi_h`` = 485,000 trips a day / (13,437 medallions * 24 h) = 1.50 (TLC 2014
Taxicab Fact Book, the figures the demand table's scale factor uses): the simulated fleet has
the trips per cab-hour of the real one.

Calibration. Trip records hold *served* trips only; a passenger who gives up before a cab
passes leaves no record. Passengers therefore arrive at ``m * share * λ_obs(link, slot)`` with
the multiplier ``m >= 1`` set by a fixed point: simulate the reference fleet (``hotspot``,
the usual drivers' heuristic) on calibration seeds, measure served trips per hour, and update
``m <- m * target / served`` until served trips reproduce ``share * observed pickups`` within
``tolerance``. Every policy is then evaluated against the same arrival process.

Passengers (per seed, independent of the policy: common random numbers): Poisson arrivals per
link and 30-minute slot, exponential patience (mean ``patience_s``), a fare drawn from a
log-normal matched to the link's observed 10/50/90 % fare quantiles, a trip duration and
distance scaling the link's observed means by ``fare / mean fare`` (metered fares grow with
both), and a drop-off cell from the observed drop-off distribution of the pickup cell; the
drop-off link is a uniform cruisable link of that cell. A trip ending outside the area brings
the cab back empty after as long again, onto a cruisable link near the area's edge.

Traps (:func:`tiles.traps.trapped_links`: links a cab can enter but never drive out of, such as
a one-way street into a service spur cut by the extract's edge). No passenger waits and no cab
is put in one: a passenger drawn on a trapped link waits on the nearest link that is not
(:func:`tiles.traps.escape_links`: she walks out of the spur), and a drop-off link, a link
near the edge a cab comes back on, or a starting link that is trapped is replaced by that
link the same way (same draws: every other passenger, drop-off and start is unchanged).
:meth:`World.rates` (what the baselines see) has a trapped link's rates on its escape link,
where its passengers wait. A cab that drives into a trap all the same is taken out by the
engine (``RunResult.trap_rescues``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from agent.planner import PlannerParams
from models.demand import SLOT_MINUTES, DemandTable, TickDemand, tick_demand_from_table
from tiles.graph import Graph
from tiles.traps import escape_links, trapped_links

if TYPE_CHECKING:
    from models import RecentCounts
    from tools.sim.sim_model import SimModel

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]

#: TLC 2014 Taxicab Fact Book: 485,000 trips a day, 13,437 medallions
TRIPS_PER_TAXI_H = 485_000.0 / (13_437 * 24.0)
#: z of the 10 % / 90 % quantiles of a normal distribution
Z90 = 1.2815515655446004
#: the matching rules of :class:`SimConfig`
MATCHING = ("hail", "dispatch")
#: how close to the area's bounding box a link must be to receive cabs coming back from outside
EDGE_BAND_M = 300.0


@dataclass(frozen=True)
class SimConfig:
    """One simulated shift (times are local; the shift starts at ``start_minute_of_week``)."""

    taxis: int = 30
    #: cabs driving the policy under test; the others drive ``calibrate_with``
    test_taxis: int = 5
    hours: float = 4.0
    start_minute_of_week: float = 1 * 1440 + 8 * 60  # Tuesday 08:00
    patience_s: float = PlannerParams.patience_s
    trips_per_taxi_h: float = TRIPS_PER_TAXI_H
    replan_s: float = 60.0  # nagashi cabs replan this often (the agent's tick)
    supply_window_s: float = 900.0  # the supply map counts vacant passes over this window
    hotspot_top_share: float = 0.05  # hotspots: this share of cruisable links, by demand now
    dead_end_wait_s: float = 60.0
    calibrate_with: str = "hotspot"
    calibration_seeds: int = 2
    calibration_rounds: int = 8
    calibration_tolerance: float = 0.03
    max_multiplier: float = 20.0
    #: how a passenger finds a cab: "hail" (the first vacant cab to finish her link while she
    #: waits) or "dispatch" (the nearest vacant cab that can reach her within ``max_wait_s``)
    matching: str = "hail"
    max_wait_s: float = 600.0  # dispatch: COMSET's resource lifetime
    #: the live layer's faults (tools.sim.live): each heartbeat and each cab's snapshot fetch
    #: lost with this probability, and the server down over these minutes after the start
    live_loss: float = 0.0
    live_outage_min: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.live_loss <= 1.0:
            raise ValueError("live_loss must be a probability in [0, 1]")
        if self.live_outage_min is not None:
            a, b = self.live_outage_min
            if not 0.0 <= a < b:
                raise ValueError("live_outage_min must be START..END minutes, 0 <= START < END")
            if a >= self.hours * 60.0:
                raise ValueError("live_outage_min: the outage starts after the shift ends")
        if self.matching not in MATCHING:
            raise ValueError(f"matching must be one of {', '.join(MATCHING)}")
        if self.max_wait_s <= 0:
            raise ValueError("max_wait_s must be positive")
        if (
            self.taxis < 1
            or not self.test_taxis >= 1
            or self.hours <= 0
            or self.replan_s <= 0
            or self.patience_s <= 0
        ):
            raise ValueError("taxis, hours, replan_s and patience_s must be positive")


@dataclass(frozen=True, eq=False)
class World:
    """Everything a run needs that does not depend on the seed or the policy."""

    graph: Graph
    table: DemandTable
    config: SimConfig
    params: PlannerParams  # what the nagashi cabs plan with (and greedy's pickup model)
    tau_s: F64  # cruising traversal time per local link
    length_m: F64
    cruisable: Bool
    succ: tuple[tuple[int, ...], ...]  # legal successors per local link (turns)
    edge_band: I64  # cruisable links near the area's edge (re-entry from outside)
    cell_links: tuple[I64, ...]  # cruisable local links per demand cell
    share: float
    observed_area_rate_h: float  # mean over the shift of the table's area rate
    trapped: Bool  # links a cab cannot drive out of (tiles.traps, no-entry windows aside)
    escape: I64  # per link: itself, or for a trapped one the nearest cruisable untrapped link
    #: the cell demand model the ``+model`` nagashi policies plan with (``simulate --model``)
    model: SimModel | None = None

    @property
    def n(self) -> int:
        return int(self.tau_s.shape[0])

    @property
    def shift_s(self) -> float:
        return self.config.hours * 3600.0

    def minute_at(self, t_s: float) -> float:
        return self.config.start_minute_of_week + t_s / 60.0

    def link_rates(self, minute_of_week: float, multiplier: float) -> F64:
        """Arrival rates (per hour) of the simulated world on every local link as the table
        has them (what :func:`make_passengers` draws from)."""
        r = self.table.rates(self.graph.edge_id, [math.floor(minute_of_week)])[0]
        return np.asarray(r, dtype=np.float64) * (self.share * multiplier)

    def rates(self, minute_of_week: float, multiplier: float) -> F64:
        """Arrival rates (per hour) where a cab meets the passengers: :meth:`link_rates`, a
        trapped link's moved onto its escape link (module docs; what the baselines see)."""
        r = self.link_rates(minute_of_week, multiplier)
        if not self.trapped.any():
            return r
        met = np.zeros_like(r)
        np.add.at(met, self.escape, r)
        return met

    def tick_demand(
        self,
        minute_of_week: float,
        multiplier: float,
        *,
        model: bool = False,
        recent: RecentCounts | None = None,
    ) -> TickDemand:
        """What a nagashi cab sees: the table cut for the horizon, at the simulated rates;
        ``model``: times the factors of the world's cell demand model (``self.model``), asked
        with the ``recent`` inputs (None: as a cab offline), as a cab with the model in its
        bundle plans (:meth:`tools.sim.sim_model.SimModel.tick`)."""
        horizon_min = math.ceil(self.params.horizon_s / 60.0) + 1
        minute = math.floor(minute_of_week)
        tick = tick_demand_from_table(self.table, self.graph.edge_id, minute, horizon_min)
        scaled = (tick.pickups_per_h * np.float32(self.share * multiplier)).astype(np.float32)
        tick = dataclasses.replace(tick, pickups_per_h=scaled)
        if not model:
            return tick
        if self.model is None:
            raise ValueError("this world has no demand model (simulate --model)")
        return self.model.tick(tick, minute, recent)


def build_world(
    graph: Graph,
    table: DemandTable,
    config: SimConfig,
    speed_factor: float,
    share: float | None = None,
) -> World:
    """The world of ``config``; ``share`` (default: the fleet's share of the yellow trips, module
    docs) scales the table's absolute rates to what the simulated cabs see."""
    n = graph.n
    tau = graph.travel_time_s / speed_factor
    cruisable = graph.cruise_allowed()
    src, dst = graph.turn_pairs
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    bounds = np.searchsorted(src, np.arange(n + 1))
    succ = tuple(tuple(int(x) for x in dst[bounds[i] : bounds[i + 1]]) for i in range(n))
    mid_lon = (graph.u_lon + graph.v_lon) / 2
    mid_lat = (graph.u_lat + graph.v_lat) / 2
    lon0, lon1 = float(graph.u_lon.min()), float(graph.u_lon.max())
    lat0, lat1 = float(graph.u_lat.min()), float(graph.u_lat.max())
    band_lat = EDGE_BAND_M / 111_195.0
    band_lon = band_lat / math.cos(math.radians((lat0 + lat1) / 2))
    near = (
        (mid_lon < lon0 + band_lon)
        | (mid_lon > lon1 - band_lon)
        | (mid_lat < lat0 + band_lat)
        | (mid_lat > lat1 - band_lat)
    )
    trapped = trapped_links(graph)
    escape = escape_links(graph, trapped, cruisable)
    if (escape < 0).any():  # every cruisable link is trapped: nowhere to take a cab out to
        trapped = np.zeros(n, dtype=bool)
        escape = np.arange(n, dtype=np.int64)
    edge_band = np.flatnonzero(near & cruisable).astype(np.int64)
    if edge_band.size == 0:
        edge_band = np.flatnonzero(cruisable).astype(np.int64)
    # a trapped entry is replaced by its escape link, not dropped: the draws stay the same
    edge_band = escape[edge_band]
    cells = table.edge_cell[graph.edge_id].astype(np.int64)
    cell_links = tuple(
        escape[np.flatnonzero((cells == c) & cruisable)] for c in range(table.grid.n_cells)
    )
    steps = np.arange(0.0, config.hours * 60.0, SLOT_MINUTES / 2)
    minutes = (config.start_minute_of_week + steps).astype(np.int64)
    area_rate = float(table.rates(graph.edge_id, minutes).sum(axis=1).mean())
    if share is None:
        share = config.taxis * config.trips_per_taxi_h / area_rate if area_rate > 0 else 0.0
    # the cabs plan for the market's matching rule (a params.yaml's planner section may say
    # otherwise: ``matching: hail`` measures the street-hail values under dispatch)
    params = PlannerParams(
        speed_factor=speed_factor, patience_s=config.patience_s, matching=config.matching
    )
    return World(
        graph=graph,
        table=table,
        config=config,
        params=params,
        tau_s=tau,
        length_m=np.asarray(graph.length_m, dtype=np.float64),
        cruisable=cruisable,
        succ=succ,
        edge_band=edge_band,
        cell_links=cell_links,
        share=share,
        observed_area_rate_h=area_rate,
        trapped=trapped,
        escape=escape,
    )


@dataclass(frozen=True, eq=False)
class Passengers:
    """Passengers of one seeded shift, sorted by (link, arrival); offsets per local link."""

    link: I64
    arrive_s: F64
    leave_s: F64  # arrival + patience
    fare: F64
    duration_s: F64
    distance_m: F64
    dropoff_link: I64  # where the cab is vacant again (re-entry link after an outside trip)
    outside: npt.NDArray[np.bool_]  # the trip ends outside the area
    offsets: I64  # (n+1,)

    @property
    def count(self) -> int:
        return int(self.link.shape[0])


def make_passengers(world: World, seed: int, multiplier: float) -> Passengers:
    rng = np.random.default_rng([seed, 0x5EED])
    n = world.n
    links: list[I64] = []
    times: list[F64] = []
    piece_s = SLOT_MINUTES * 60.0
    start = 0.0
    while start < world.shift_s:
        # pieces aligned to the demand slots
        minute = world.minute_at(start)
        to_slot_end = (SLOT_MINUTES - (minute % SLOT_MINUTES)) * 60.0
        length = min(to_slot_end, piece_s, world.shift_s - start)
        rate = world.link_rates(minute, multiplier)
        counts = rng.poisson(rate * length / 3600.0)
        idx = np.repeat(np.arange(n, dtype=np.int64), counts)
        links.append(idx)
        times.append(start + rng.uniform(0.0, length, idx.shape[0]))
        start += length
    link = np.concatenate(links) if links else np.zeros(0, dtype=np.int64)
    arrive = np.concatenate(times) if times else np.zeros(0)
    order = np.lexsort((arrive, link))
    link, arrive = link[order], arrive[order]
    m = link.shape[0]
    leave = arrive + rng.exponential(world.config.patience_s, m)
    fare, duration, distance, drop, outside = draw_trips(world, link, rng)
    offsets = np.searchsorted(link, np.arange(n + 1)).astype(np.int64)
    pax = Passengers(link, arrive, leave, fare, duration, distance, drop, outside, offsets)
    return walk_out_of_traps(world, pax)


def walk_out_of_traps(world: World, pax: Passengers) -> Passengers:
    """``pax`` with every passenger on a trapped link waiting on its escape link instead (module
    docs), sorted again by (link, arrival); her fare and trip are those drawn where she
    arrived, so every other passenger is the same. ``pax`` itself when none is trapped."""
    if not world.trapped[pax.link].any():
        return pax
    link = world.escape[pax.link]
    order = np.lexsort((pax.arrive_s, link))
    link = link[order]
    return Passengers(
        link=link,
        arrive_s=pax.arrive_s[order],
        leave_s=pax.leave_s[order],
        fare=pax.fare[order],
        duration_s=pax.duration_s[order],
        distance_m=pax.distance_m[order],
        dropoff_link=pax.dropoff_link[order],
        outside=pax.outside[order],
        offsets=np.searchsorted(link, np.arange(world.n + 1)).astype(np.int64),
    )


def draw_trips(
    world: World, link: I64, rng: np.random.Generator
) -> tuple[F64, F64, F64, I64, Bool]:
    """Fare, trip duration, distance, drop-off link and "ends outside" of trips starting on the
    local links ``link``, drawn from the table's yellow-cab distributions (module docs): the
    link's fare quantiles (shrunk toward its cell's), its mean trip time and distance, and its
    cell's drop-off distribution. The table carries no hour dimension for these, so the draw
    is the same at every hour."""
    t = world.table
    m = link.shape[0]
    gid = world.graph.edge_id[link].astype(np.int64)
    q = t.fare_quantiles[gid].astype(np.float64)
    q10 = np.maximum(q[:, 0], 0.5)
    q50 = np.maximum(q[:, 1], q10)
    q90 = np.maximum(q[:, 2], q50)
    sigma = np.maximum(np.log(q90 / q10) / (2 * Z90), 1e-6)
    fare = np.exp(np.log(q50) + sigma * rng.standard_normal(m))
    mean_fare = np.maximum(t.fare_mean[gid].astype(np.float64), 0.5)
    ratio = fare / mean_fare
    duration = np.maximum(t.trip_duration_s[gid].astype(np.float64) * ratio, 60.0)
    distance = t.trip_distance_m[gid].astype(np.float64) * ratio
    cells = t.edge_cell[gid].astype(np.int64)
    cum = np.cumsum(t.dropoff[cells].astype(np.float64), axis=1)
    u = rng.uniform(0.0, 1.0, m) * cum[:, -1]
    dcell = (cum < u[:, None]).sum(axis=1)
    drop, outside = drop_links(world, dcell, rng)
    return fare, duration, distance, drop, outside


def drop_links(world: World, dcell: I64, rng: np.random.Generator) -> tuple[I64, Bool]:
    """A uniform cruisable link of each drop-off cell; a cell outside the grid (or with no
    cruisable link) ends outside: the cab comes back on a link near the area's edge."""
    m = dcell.shape[0]
    n_cells = world.table.grid.n_cells
    u2 = np.asarray(rng.uniform(0.0, 1.0, m), dtype=np.float64)
    drop = np.full(m, -1, dtype=np.int64)
    for i in np.flatnonzero((dcell >= 0) & (dcell < n_cells)):
        cand = world.cell_links[int(dcell[i])]
        if cand.size:
            drop[i] = int(cand[min(int(u2[i] * cand.size), cand.size - 1)])
    outside = drop < 0
    band = world.edge_band
    drop[outside] = band[rng.integers(0, band.size, int(outside.sum()))]
    return drop, outside
