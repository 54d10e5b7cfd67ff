"""A customisable contraction hierarchy (RoutingKit's CCH, ``routingkit-cch``) on the edge-based
graph: the engine behind :class:`tiles.routing.EdgeRouter` when the library is installed.

States are links and arcs the legal turns (``Graph.turn_pairs``), as in ``Graph.line_graph``:
the arc ``e -> f`` weighs the cost of entering and driving ``f``, and an arc into a link that may
not be entered weighs RoutingKit's infinity, so the turn restrictions and the avoided or closed
links are those of the Dijkstra path exactly.

Three phases, each cached where it is reused:

* the *order* (nested dissection by inertial flow, the slow part: about 0.35 s on Manhattan
  Midtown's 3,431 links) depends on the topology and the link positions only; it is kept with
  the graph object and on disk (:func:`cache_dir`), named by the SHA-256 of exactly what it was
  computed from (links, turns, positions, the library's version), so a changed graph rebuilds;
* the *hierarchy* (contraction), once per graph object (an equal graph of another store
  reuses one of the last few);
* the *metric* (customisation, a few ms), once per cost and allowed mask.

Weights are integers (RoutingKit's are 32-bit): ``scale`` units per cost unit, 10,000 (0.1 ms,
0.1 mm) unless the sum of every enterable link's cost would not fit in 2**31 - 2 -- a shortest
path visits a link at most once, so no path distance can overflow. The path found is optimal
under the rounded weights; its cost is then summed from the float costs, so it is the exact cost
of a legal path and exceeds the float optimum by at most ``0.5 / scale`` per link of the two
paths (ties and near-ties may pick another path of the same cost).

``routingkit-cch`` is optional (the ``cch`` extra): without it, or with ``NAGASHI_ROUTING=dijkstra``
in the environment when this module is first imported, :data:`ENABLED` is false and
``tiles.routing`` runs scipy's Dijkstra.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import math
import os
import threading
import weakref
from collections import OrderedDict
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tiles.fileio import atomic_write_bytes
from tiles.graph import Graph

_rk: Any
try:
    import routingkit_cch as _rk
except ImportError:  # no wheel for this platform: tiles.routing falls back to scipy's Dijkstra
    _rk = None

log = logging.getLogger(__name__)

#: environment variable read at import: ``dijkstra`` forces the scipy fallback
BACKEND_ENV = "NAGASHI_ROUTING"
#: where the orders are kept (default ``~/.cache/nagashi/cch``)
CACHE_ENV = "NAGASHI_CACHE_DIR"
#: RoutingKit's infinite weight (an arc that can never be used)
INF_WEIGHT = 2**31 - 1
#: integer weight units per cost unit, unless the graph's costs need fewer to fit
MAX_SCALE = 1e4

ENABLED: bool = _rk is not None and os.environ.get(BACKEND_ENV, "").lower() != "dijkstra"

F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]
I64 = npt.NDArray[np.int64]


@functools.cache
def library_version() -> str | None:
    """The installed ``routingkit-cch`` version (None when it is not installed)."""
    if _rk is None:
        return None
    try:
        return metadata.version("routingkit-cch")
    except metadata.PackageNotFoundError:
        return "unknown"


def cache_dir() -> Path:
    """The folder of the cached orders (``$NAGASHI_CACHE_DIR/cch`` or ``~/.cache/nagashi/cch``)."""
    base = os.environ.get(CACHE_ENV)
    return (Path(base) if base else Path.home() / ".cache" / "nagashi") / "cch"


class Hierarchy:
    """The order and the contraction of one graph's edge-based graph (weights come later)."""

    def __init__(self, g: Graph, key: str | None = None) -> None:
        assert _rk is not None, "routingkit-cch is not installed"
        src, dst = g.turn_pairs
        self.n = g.n
        self.tail = src.astype(np.int64)
        self.head = dst.astype(np.int64)
        self.key = key if key is not None else order_key(g, self.tail, self.head)
        order, self.order_source = _order(g, self)  # "disk" or "computed"
        self.cch = _rk.CCH(order, self.tail.tolist(), self.head.tolist(), False)


_HIERARCHIES: weakref.WeakKeyDictionary[Graph, Hierarchy] = weakref.WeakKeyDictionary()
#: the last few hierarchies by content key: an equal graph of another store reuses one
_RECENT: OrderedDict[str, Hierarchy] = OrderedDict()
RECENT_HIERARCHIES = 4
_HIER_LOCK = threading.Lock()


def hierarchy(g: Graph) -> Hierarchy:
    """The graph's hierarchy, built on first use and kept as long as the graph object (and,
    among the last :data:`RECENT_HIERARCHIES`, for an equal graph)."""
    with _HIER_LOCK:
        h = _HIERARCHIES.get(g)
        if h is not None:
            return h
        src, dst = g.turn_pairs
        key = order_key(g, src.astype(np.int64), dst.astype(np.int64))
        h = _RECENT.pop(key, None)
        if h is None:
            h = Hierarchy(g, key)
        _RECENT[key] = h
        while len(_RECENT) > RECENT_HIERARCHIES:
            _RECENT.popitem(last=False)
        _HIERARCHIES[g] = h
        return h


def order_key(g: Graph, tail: I64, head: I64) -> str:
    """SHA-256 of everything the order is computed from."""
    lat, lon = _positions(g)
    d = hashlib.sha256()
    d.update(f"routingkit-cch {library_version()} n={g.n}\n".encode())
    for a in (tail, head, lat, lon):
        d.update(np.ascontiguousarray(a).tobytes())
    return d.hexdigest()


def _positions(g: Graph) -> tuple[F64, F64]:
    lat = (np.asarray(g.u_lat, dtype=np.float64) + np.asarray(g.v_lat, dtype=np.float64)) / 2
    lon = (np.asarray(g.u_lon, dtype=np.float64) + np.asarray(g.v_lon, dtype=np.float64)) / 2
    return lat, lon


def _order(g: Graph, h: Hierarchy) -> tuple[list[int], str]:
    """The nested-dissection order, from the disk cache when it holds this graph's."""
    assert _rk is not None
    tail, head = h.tail, h.head
    path = cache_dir() / f"order-{h.key}.npy"
    try:
        order = np.load(path, allow_pickle=False)
        if order.shape == (g.n,) and np.array_equal(np.sort(order), np.arange(g.n)):
            return order.tolist(), "disk"
        log.warning("CCH order cache %s is not an order of this graph: recomputing", path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        log.warning("CCH order cache %s unreadable (%s): recomputing", path, e)
    lat, lon = _positions(g)
    computed: list[int] = _rk.compute_order_inertial(
        g.n, tail.tolist(), head.tolist(), lat.tolist(), lon.tolist()
    )
    buf = io.BytesIO()
    np.save(buf, np.asarray(computed, dtype=np.int32), allow_pickle=False)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:  # a read-only home: the order is recomputed next time, nothing is lost
        log.warning("CCH order not cached at %s: %s", path, e)
    return computed, "computed"


def weight_scale(cost: F64, allowed: Bool) -> float:
    """Integer units per cost unit: :data:`MAX_SCALE`, or fewer so that no path can overflow."""
    total = float(np.sum(np.maximum(cost[allowed], 0.0)))
    if total <= 0:
        return MAX_SCALE
    return min(MAX_SCALE, (INF_WEIGHT - 1) / total)


class Metric:
    """One cost and allowed mask customised on a hierarchy, with its query objects.

    Query objects are not thread-safe and a result must be dropped before the next query, so
    every query runs under the metric's lock.
    """

    def __init__(self, h: Hierarchy, cost: F64, allowed: Bool) -> None:
        assert _rk is not None
        self.hierarchy = h
        self.scale = weight_scale(cost, allowed)
        w = np.maximum(np.rint(cost[h.head] * self.scale), 1).astype(np.int64)
        w[~allowed[h.head]] = INF_WEIGHT
        self.metric = _rk.CCHMetric(h.cch, w.tolist())
        self.query = _rk.CCHQuery(self.metric)
        self._lock = threading.Lock()
        self._one_to_many: tuple[bytes, Any] | None = None
        self._many_to_one: tuple[bytes, Any] | None = None

    def path(self, src: int, dst: int) -> list[int] | None:
        """Links from ``src`` to ``dst`` (both included), or None when there is no legal path."""
        with self._lock:
            r = self.query.run(src, dst)
            p: list[int] | None = r.node_path if r.distance is not None else None
            del r  # the query object refuses to run again while a result is alive
        return p

    def distances_from(self, src: int, targets: I64) -> F64:
        """Rounded-weight distances (cost units) from ``src`` to each target, inf unreachable."""
        key = targets.tobytes()
        with self._lock:
            if self._one_to_many is None or self._one_to_many[0] != key:
                if self._one_to_many is None:
                    self._one_to_many = (key, _rk.CCHOneToMany(self.metric, targets.tolist()))
                else:
                    self._one_to_many[1].repin_targets(targets.tolist())
                    self._one_to_many = (key, self._one_to_many[1])
            d = self._one_to_many[1].distances_from(src)
        return self._as_cost(d)

    def distances_to(self, sources: I64, dst: int) -> F64:
        """Rounded-weight distances (cost units) from each source to ``dst``, inf unreachable."""
        key = sources.tobytes()
        with self._lock:
            if self._many_to_one is None or self._many_to_one[0] != key:
                if self._many_to_one is None:
                    self._many_to_one = (key, _rk.CCHManyToOne(self.metric, sources.tolist()))
                else:
                    self._many_to_one[1].repin_sources(sources.tolist())
                    self._many_to_one = (key, self._many_to_one[1])
            d = self._many_to_one[1].distances_to(dst)
        return self._as_cost(d)

    def _as_cost(self, d: list[int | None]) -> F64:
        out = np.array([math.inf if x is None else x for x in d], dtype=np.float64)
        return out / self.scale
