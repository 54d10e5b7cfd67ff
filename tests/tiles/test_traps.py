"""Closed traps of the turn graph (tiles.traps): a hand-built one-way into a spur, and the real
networks, checked against reachability computed apart (scipy's Dijkstra from the main
network), with Midtown's one-way into a service spur at the extract's east edge by OSM way."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from tiles import TileStore, escape_links, trapped_links
from tiles.geo import bearing_deg, haversine_m
from tiles.graph import Graph
from tiles.tags import FLAG_MOTORWAY, HIGHWAY_CODE

# A two-way block A-B-C-D with a cul-de-sac D<->J (the U-turn at J joins the block's two
# directions), a one-way street B->E into a two-way spur E<->F (a U-turn at F and at E: the
# only ways on), a one-way street G->A into the block, and a link C->H whose only way on is a
# motorway H->I.
PT = {
    "A": (139.700, 35.660),
    "B": (139.701, 35.660),
    "C": (139.701, 35.661),
    "D": (139.700, 35.661),
    "E": (139.702, 35.660),
    "F": (139.703, 35.660),
    "G": (139.699, 35.660),
    "H": (139.701, 35.662),
    "I": (139.701, 35.663),
    "J": (139.699, 35.661),
}
LINKS = [
    "AB", "BA", "BC", "CB", "CD", "DC", "DA", "AD",  # the block (0-7)
    "BE", "EF", "FE",  # the trap (8-10)
    "GA",  # into the block (11)
    "CH", "HI",  # into a motorway (12, 13)
    "DJ", "JD",  # the cul-de-sac (14, 15)
]  # fmt: skip
MOTORWAY = {"HI"}


def _turns(name: str) -> list[str]:
    """Legal turns: every link out of the end node but the U-turn, which is legal only where
    it is the only way on."""
    on = [x for x in LINKS if x[0] == name[1]]
    ahead = [x for x in on if x[1] != name[0]]
    return ahead or [x for x in on if x[1] == name[0]]


def hand_graph(extra_turn: tuple[str, int] | None = None) -> Graph:
    """The graph above; ``extra_turn`` (link, global id): one more turn onto an edge not loaded
    (the network goes on beyond this graph there)."""
    n = len(LINKS)
    u = np.array([PT[x[0]] for x in LINKS], dtype=np.float64)
    v = np.array([PT[x[1]] for x in LINKS], dtype=np.float64)
    nodes = {k: i for i, k in enumerate(PT)}
    turns = [[LINKS.index(t) for t in _turns(x)] for x in LINKS]
    total = n
    if extra_turn is not None:
        turns[LINKS.index(extra_turn[0])].append(extra_turn[1])
        total = extra_turn[1] + 1
    bearing = bearing_deg(u[:, 0], u[:, 1], v[:, 0], v[:, 1]).astype(np.float32)
    return Graph(
        edge_id=np.arange(n, dtype=np.int32),
        u_lon=u[:, 0].copy(),
        u_lat=u[:, 1].copy(),
        v_lon=v[:, 0].copy(),
        v_lat=v[:, 1].copy(),
        u_node=np.array([nodes[x[0]] for x in LINKS], dtype=np.int32),
        v_node=np.array([nodes[x[1]] for x in LINKS], dtype=np.int32),
        way_id=np.arange(n, dtype=np.int64),
        length_m=haversine_m(u[:, 0], u[:, 1], v[:, 0], v[:, 1]).astype(np.float32),
        speed_kph=np.full(n, 30.0, dtype=np.float32),
        highway=np.full(n, HIGHWAY_CODE["residential"], dtype=np.uint8),
        flags=np.array([FLAG_MOTORWAY if x in MOTORWAY else 0 for x in LINKS], dtype=np.uint16),
        bearing_start=bearing,
        bearing_end=bearing,
        geom_offsets=np.arange(0, 2 * n + 1, 2, dtype=np.int64),
        geom_lonlat=np.stack([u, v], axis=1).reshape(-1, 2),
        turn_offsets=np.concatenate([[0], np.cumsum([len(t) for t in turns])]).astype(np.int64),
        turn_to=np.array([t for ts in turns for t in ts], dtype=np.int32),
        win_edge=np.zeros(0, dtype=np.int32),
        win_start=np.zeros(0, dtype=np.int16),
        win_end=np.zeros(0, dtype=np.int16),
        n_edges_total=total,
    )


def names(mask: np.ndarray) -> set[str]:
    return {LINKS[i] for i in np.flatnonzero(mask)}


def test_a_one_way_into_a_spur_is_a_trap() -> None:
    g = hand_graph()
    trapped = trapped_links(g)
    # the spur and the one-way into it; C->H leads only onto the motorway, which a cruising
    # cab may not enter; the motorway itself is not cruisable (never trapped); G->A drives
    # out; the cul-de-sac is left by its U-turn
    assert names(trapped) == {"BE", "EF", "FE", "CH"}
    assert trapped.dtype == np.bool_ and trapped.shape == (g.n,)


def test_a_spur_with_a_turn_beyond_the_graph_is_not_a_trap() -> None:
    # a legal turn at F onto an edge outside this graph: the road goes on beyond the extract
    assert names(trapped_links(hand_graph(extra_turn=("EF", 40)))) == {"CH"}


def test_a_closed_block_link_at_that_minute_makes_more_traps() -> None:
    g = hand_graph()
    # B->C closed in minutes 0-59 of the week
    closed = dataclasses.replace(
        g,
        win_edge=np.array([LINKS.index("BC")], dtype=np.int32),
        win_start=np.array([0], dtype=np.int16),
        win_end=np.array([60], dtype=np.int16),
    )
    # an ordinary minute: the same traps as without the window
    assert names(trapped_links(closed, 120)) == names(trapped_links(g))
    # minute 30: from A->B the only way on is B->E, into the spur, and D->A leads only onto
    # A->B; C->D still turns into the cul-de-sac and G->A onto A->D
    assert names(trapped_links(closed, 30)) == {"AB", "DA", "BE", "EF", "FE", "CH"}
    assert names(trapped_links(closed)) == names(trapped_links(g))  # flags only: no window


def test_escape_links_leave_the_trap_for_the_nearest_link_start() -> None:
    g = hand_graph()
    trapped = trapped_links(g)
    esc = escape_links(g, trapped)
    free = np.flatnonzero(~trapped)
    assert np.array_equal(esc[free], free)  # not trapped: itself
    # F->E and B->E end at E: the nearest start of an allowed, free link is B (90 m): B->A,
    # the lower id of B->A and B->C (B->E starts there too, but is trapped)
    assert LINKS[int(esc[LINKS.index("FE")])] == "BA"
    assert LINKS[int(esc[LINKS.index("BE")])] == "BA"
    # C->H ends at H: the nearest free start is C (C->B, C->D tie: the lower id)
    assert LINKS[int(esc[LINKS.index("CH")])] == "CB"
    ok = g.cruise_allowed()
    assert (ok[esc] & ~trapped[esc])[trapped].all()
    assert np.array_equal(escape_links(g, trapped, np.zeros(g.n, dtype=bool))[trapped], [-1] * 4)


def _expected_traps(g: Graph) -> np.ndarray:
    """Reachability computed apart: the main network is the strongly connected set of more
    than half the allowed links (fwd and bwd Dijkstra from one of its links); a link is
    trapped when it is allowed and no allowed path leads from it to that link."""
    ok = g.cruise_allowed()
    lg = g.line_graph(np.ones(g.n), ok)  # arcs into disallowed links dropped
    lg = sp.diags(ok.astype(np.float64)) @ lg  # and the arcs out of them
    lg.eliminate_zeros()
    rev = lg.T.tocsr()
    for start in np.flatnonzero(ok)[:: max(1, int(ok.sum()) // 20)]:
        fwd = np.isfinite(dijkstra(lg, indices=int(start)))
        bwd = np.isfinite(dijkstra(rev, indices=int(start)))
        if int((fwd & bwd).sum()) * 2 > int(ok.sum()):
            return np.asarray(ok & ~bwd)
    raise AssertionError("no strongly connected set of more than half the allowed links")


@pytest.mark.parametrize("area", ["manhattan", "shibuya", "monaco"])
def test_real_networks_traps_are_what_reachability_says(
    area: str, request: pytest.FixtureRequest
) -> None:
    path: Path = request.getfixturevalue(f"{area}_tiles")
    with TileStore(path) as store:
        g = store.all()
    trapped = trapped_links(g)
    assert np.array_equal(trapped, _expected_traps(g))
    assert 0 < int(trapped.sum()) < int(g.cruise_allowed().sum()) // 5
    # closed: every allowed way on from a trapped link is trapped again
    src, dst = g.turn_pairs
    ok = g.cruise_allowed()
    on = trapped[src] & ok[dst]
    assert trapped[dst[on]].all()
    esc = escape_links(g, trapped)
    assert (esc >= 0).all() and (ok[esc] & ~trapped[esc])[trapped].all()


def test_midtown_one_way_into_the_east_edge_spur(manhattan_tiles: Path) -> None:
    """The trap of docs/planner.md (its edges 3355 -> 3402 <-> 3403 in one build): the service
    spur (OSM way 1090458890, both directions) and the one-way street into it (way 710571392),
    at the extract's east edge."""
    with TileStore(manhattan_tiles) as store:
        g = store.all()
    trapped = trapped_links(g)
    spur = np.flatnonzero(g.way_id == 1090458890)
    assert spur.size == 2  # the two directions of one segment
    assert trapped[spur].all()
    src, dst = g.turn_pairs
    # the spur's two directions lead only into each other (the U-turns at its ends)
    for e in spur.tolist():
        assert set(dst[src == e].tolist()) == set(spur.tolist()) - {e}
    into = [int(e) for e in src[np.isin(dst, spur)] if g.way_id[e] == 710571392]
    assert len(into) == 1 and trapped[into[0]]
    assert set(dst[src == into[0]].tolist()) <= set(spur.tolist())  # its only way on
    # the one-way street is not driven back: nothing of the spur turns onto way 710571392
    assert not np.isin(g.way_id[dst[np.isin(src, spur)]], [710571392]).any()
    # the main network is not trapped
    assert int((~trapped & g.cruise_allowed()).sum()) > 2000
    # a cab taken off the spur is put on a free link within 100 m of the spur's end
    esc = escape_links(g, trapped)
    for e in [*spur.tolist(), into[0]]:
        f = int(esc[e])
        d = float(haversine_m(g.v_lon[e], g.v_lat[e], g.u_lon[f], g.u_lat[f]))
        assert not trapped[f] and d < 100.0
