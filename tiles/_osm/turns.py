"""Legal turns: each edge's successors after the U-turn rule and the turn restrictions
(:func:`legal_turns`), and the complex junctions (:func:`flag_complex_junctions`)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np
import numpy.typing as npt

from tiles import tags as T
from tiles._osm.collect import RawRestriction


class _Edges:
    """The directed edges, indexed for the restriction rules: by way and by start node."""

    def __init__(
        self,
        edge_u: npt.NDArray[np.int32],
        edge_v: npt.NDArray[np.int32],
        edge_way: npt.NDArray[np.int64],
        piece: npt.NDArray[np.int64],
        node_osm: npt.NDArray[np.int64],
    ) -> None:
        self.u, self.v, self.way, self.piece = edge_u, edge_v, edge_way, piece
        self.n = len(edge_u)
        self.out_of: dict[int, list[int]] = defaultdict(list)
        for e in range(self.n):
            self.out_of[int(edge_u[e])].append(e)
        self.node_of_osm = {int(x): i for i, x in enumerate(node_osm)}
        self.of_way: dict[int, list[int]] = defaultdict(list)
        for e in range(self.n):
            self.of_way[int(edge_way[e])].append(e)

    def into(self, way: int, node: int) -> list[int]:
        """The edges of ``way`` that end at ``node``."""
        return [e for e in self.of_way.get(way, []) if self.v[e] == node]

    def outof(self, way: int, node: int) -> list[int]:
        """The edges of ``way`` that start at ``node``."""
        return [e for e in self.of_way.get(way, []) if self.u[e] == node]


def legal_turns(
    edge_u: npt.NDArray[np.int32],
    edge_v: npt.NDArray[np.int32],
    edge_way: npt.NDArray[np.int64],
    piece: npt.NDArray[np.int64],
    node_osm: npt.NDArray[np.int64],
    restrictions: list[RawRestriction],
) -> tuple[list[list[int]], list[dict[str, Any]], Counter[str]]:
    """Successor lists per edge after U-turn and restriction rules, with one report row per
    restriction and the count of each status."""
    edges = _Edges(edge_u, edge_v, edge_way, piece, node_osm)
    banned: set[tuple[int, int]] = set()
    only: dict[int, set[int]] = {}
    stats: Counter[str] = Counter()
    rows: list[dict[str, Any]] = []
    for r in restrictions:
        status, pairs = _restricted_pairs(edges, r)
        stats[status] += 1
        if pairs:
            _apply(r.kind, pairs, banned, only)
        rows.append(
            {
                "relation_id": r.relation_id,
                "kind": r.kind,
                "from_way": r.from_way,
                "to_way": r.to_way,
                "via_nodes": r.via_nodes,
                "via_ways": r.via_ways,
                "status": status,
                "pairs": [[int(f), int(t)] for f, t in pairs],
            }
        )
    return _successors(edges, banned, only), rows, stats


def _restricted_pairs(edges: _Edges, r: RawRestriction) -> tuple[str, list[tuple[int, int]]]:
    """(status, the (from edge, to edge) turns a restriction names)."""
    if r.via_nodes and not r.via_ways:
        via = edges.node_of_osm.get(r.via_nodes[0])
        if via is None:
            return "via_outside_graph", []
        froms = edges.into(r.from_way, via)
        tos = edges.outof(r.to_way, via)
        if r.from_way == r.to_way:
            tos = [t for t in tos for f in froms if edges.piece[t] == edges.piece[f]]
        if not froms or not tos:
            return "ways_not_at_via", []
        return "applied", [(f, t) for f in froms for t in tos]
    if r.via_ways:
        # conservative, for every approach (the state would need the way the cab came by):
        # no_*: the final turn from the last via way into the to way is banned;
        # only_*: from the last via way at that junction, the to way is the only way on
        end_nodes = {int(edges.u[e]) for e in edges.of_way.get(r.to_way, [])}
        last_via = r.via_ways[-1]
        pairs = [
            (f, t)
            for f in edges.of_way.get(last_via, [])
            for t in edges.outof(r.to_way, int(edges.v[f]))
            if int(edges.v[f]) in end_nodes and edges.way[t] != last_via
        ]
        return ("applied_conservative_via_way" if pairs else "ways_not_connected"), pairs
    return "applied", []


def _apply(
    kind: str,
    pairs: list[tuple[int, int]],
    banned: set[tuple[int, int]],
    only: dict[int, set[int]],
) -> None:
    """A ``no_*`` restriction bans its turns; an ``only_*`` one leaves them the only ones."""
    if kind.startswith("no_"):
        banned.update(pairs)
        return
    mine: dict[int, set[int]] = defaultdict(set)
    for f, t in pairs:
        mine[f].add(t)
    for f, ts in mine.items():
        # two only_* restrictions on one link: each must hold, so intersect
        only[f] = only[f] & ts if f in only else ts


def _successors(
    edges: _Edges, banned: set[tuple[int, int]], only: dict[int, set[int]]
) -> list[list[int]]:
    """Each edge's legal next edges: no U-turn except at a dead end, then the restrictions."""
    succ: list[list[int]] = []
    for e in range(edges.n):
        cands = edges.out_of.get(int(edges.v[e]), [])
        uturn = [f for f in cands if edges.v[f] == edges.u[e] and edges.piece[f] == edges.piece[e]]
        nonu = [f for f in cands if f not in uturn]
        allowed = nonu if nonu else uturn  # U-turn only at dead ends
        if e in only:
            allowed = [f for f in cands if f in only[e]]
        allowed = [f for f in allowed if (e, f) not in banned]
        succ.append(sorted(allowed))
    return succ


def flag_complex_junctions(
    edge_u: npt.NDArray[np.int32],
    edge_v: npt.NDArray[np.int32],
    edge_way: npt.NDArray[np.int64],
    flags: npt.NDArray[np.uint16],
    n_nodes: int,
) -> None:
    """Flag edges ending at a junction where five or more distinct ways meet."""
    ways_at: dict[int, set[int]] = defaultdict(set)
    for u, v, w in zip(edge_u.tolist(), edge_v.tolist(), edge_way.tolist(), strict=True):
        ways_at[u].add(w)
        ways_at[v].add(w)
    complex_nodes = np.zeros(n_nodes, dtype=bool)
    for node, ws in ways_at.items():
        if len(ws) >= 5:
            complex_nodes[node] = True
    flags[complex_nodes[edge_v]] |= np.uint16(T.FLAG_COMPLEX)
