"""The whole-city case of ``bench cruise`` (issue 20): a city of ``districts`` real districts.

Each district is the whole Manhattan extract of ``data/osm`` (its real links, turns, no-entry
windows and the TLC demand built on it), shifted east by its own width so the districts lie
side by side; global link and node ids are offset per district. The districts differ in time:
district ``i`` sees the demand of the week ``i * DISTRICT_SHIFT_MIN`` minutes later (another
time of day, so other rates and values), under the common slot times of the tick. A trip ends
in its own district (the drop-off matrix is block-diagonal, as dense as a city-wide one: the
planner multiplies the full ``cells x cells`` matrix every layer) or outside the city.

Nine districts of 3,431 links make 30,879 links and 432 drop-off cells (48 per district's
tick; issue 20 measured 31,731 links as seven Monaco-sized districts). ``DISTRICT_SHIFT_MIN``
is whole slots, so every district's cut covers the same number of slots.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from models.demand import DemandTable, TickDemand, tick_demand_from_table
from tiles.graph import DatedRules, Graph

#: how much later in the week each district's demand is taken (3 hours)
DISTRICT_SHIFT_MIN = 180


def city_graph(district: Graph, districts: int) -> Graph:
    """``districts`` copies of ``district`` (a whole extract: local ids are its global ids),
    side by side, as one graph with ``districts * district.n_edges_total`` global ids."""
    n_total = district.n_edges_total
    nodes = int(max(district.u_node.max(initial=0), district.v_node.max(initial=0))) + 1
    width = float(
        max(district.u_lon.max(), district.v_lon.max())
        - min(district.u_lon.min(), district.v_lon.min())
    )
    parts: list[Graph] = []
    for i in range(districts):
        shift = i * width
        geom = district.geom_lonlat.copy()
        geom[:, 0] += shift
        parts.append(
            dataclasses.replace(
                district,
                edge_id=district.edge_id + i * n_total,
                u_lon=district.u_lon + shift,
                v_lon=district.v_lon + shift,
                u_node=district.u_node + i * nodes,
                v_node=district.v_node + i * nodes,
                geom_lonlat=geom,
                turn_to=district.turn_to + i * n_total,
                win_edge=district.win_edge + i * n_total,
                n_edges_total=districts * n_total,
                dated=None,
                subset_of=None,
            )
        )
    city = Graph.concat(parts)
    if district.dated is not None:
        d = district.dated
        city = dataclasses.replace(
            city,
            dated=DatedRules(
                edge=np.concatenate([d.edge + i * n_total for i in range(districts)]),
                rules=d.rules * districts,
                area=d.area,
            ),
        )
    return city


def city_demand(
    table: DemandTable, district: Graph, districts: int, minute_of_week: float, horizon_s: float
) -> TickDemand:
    """The tick's demand on :func:`city_graph` (what ``plan_from_fix`` cuts per tick)."""
    horizon_min = math.ceil(horizon_s / 60.0) + 1
    minute = math.floor(minute_of_week)
    cuts = [
        tick_demand_from_table(
            table, district.edge_id, (minute + i * DISTRICT_SHIFT_MIN) % (7 * 1440), horizon_min
        )
        for i in range(districts)
    ]
    common = tick_demand_from_table(table, district.edge_id[:1], minute, horizon_min)
    n_slots = common.slot_minute_of_week.shape[0]
    cells = [int(c.dropoff.shape[0]) for c in cuts]
    start = np.concatenate([[0], np.cumsum(cells)])
    n_cells = int(start[-1])
    dropoff = np.zeros((n_cells, n_cells + 1), dtype=np.float32)
    for i, c in enumerate(cuts):
        a, b = int(start[i]), int(start[i + 1])
        dropoff[a:b, a:b] = c.dropoff[:, :-1]
        dropoff[a:b, n_cells] = c.dropoff[:, -1]
    return TickDemand(
        edge_id=np.concatenate(
            [c.edge_id + i * district.n_edges_total for i, c in enumerate(cuts)]
        ).astype(np.int32),
        slot_minute_of_week=common.slot_minute_of_week,
        # a district's slots past the common count (a shifted start later in its slot) are cut
        pickups_per_h=np.concatenate([c.pickups_per_h[:n_slots] for c in cuts], axis=1),
        fare_mean=np.concatenate([c.fare_mean for c in cuts]),
        trip_duration_s=np.concatenate([c.trip_duration_s for c in cuts]),
        cell=np.concatenate([c.cell + start[i] for i, c in enumerate(cuts)]).astype(np.int32),
        dropoff=dropoff,
        source=common.source,
    )
