"""The simulator's route read-out without the hysteresis' figures
(:func:`agent.planner.plan.route_only_from_table`) gives the route of
:func:`agent.planner.route_from_table`, link for link, on the real Manhattan table, with and
without the table's passes, for every decision of the hysteresis (new, same, switched, kept,
committed) and previous routes that are not usable or cannot be entered."""

from __future__ import annotations

from collections import Counter
from itertools import product

import numpy as np

from agent.planner import PlannerParams, ValueTable, route_from_table
from agent.planner.plan import route_only_from_table
from agent.planner.stability import COMMITTED, KEPT, NEW, SAME, SWITCHED
from tests.conftest import EVENING_MINUTE


def test_route_only_is_the_route_of_route_from_table(
    evening_tables: tuple[ValueTable, ValueTable],
) -> None:
    params = PlannerParams()
    rng = np.random.default_rng(16)
    reasons: Counter[str] = Counter()
    for table in evening_tables:
        g = table.prep.graph
        cruisable = np.flatnonzero(table.prep.cruisable)
        for e in cruisable[:: max(cruisable.size // 60, 1)].tolist():
            gid = int(g.edge_id[e])
            minute = EVENING_MINUTE + float(rng.uniform(0.0, 3.0))
            first, _ = route_from_table(table, gid, 1.0, minute, params)
            ids = [int(x) for x in g.edge_id[first]]
            other = int(rng.choice(cruisable))
            detour, _ = route_from_table(table, int(g.edge_id[other]), 1.0, minute, params)
            shown_before = [
                None,
                [],
                ids,  # the same read-out: SAME
                ids[:-1],
                ids[: len(ids) // 2],  # a prefix, kept or switched
                ids[1:],  # from the link after: mostly not enterable
                [int(x) for x in g.edge_id[detour]],  # from elsewhere: not enterable
                [-1, *ids],  # a link outside the table: unusable
            ]
            later = minute + float(rng.uniform(0.1, 1.0))  # the next tick, another layer
            # each previous route, at both times, committed to 0, 1 or 3 links
            for prev, at, k in product(shown_before, (minute, later), (0, 1, 3)):
                case = (table, gid, 1.0, at, params)
                want, choice = route_from_table(*case, previous_route=prev, committed_links=k)
                got = route_only_from_table(*case, previous_route=prev, committed_links=k)
                assert got == want, (e, prev, at, k)
                if choice is not None:
                    reasons[choice.reason] += 1
    # every decision was met (else the comparison above would not cover it)
    assert all(reasons[r] > 0 for r in (NEW, SAME, SWITCHED, KEPT, COMMITTED)), reasons
