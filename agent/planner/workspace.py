"""The backward pass's large arrays kept between plans (issue 20, ``bench cruise``).

A whole-city plan writes a fresh ``V`` of ``rows × links`` float64 (about 80 MB at 30,879 links
and 45 minutes) every tick, and the first write to each fresh page is a page fault: measured
40–760 ms under load against 24–42 ms for the same writes to memory written once. The planner
therefore keeps ``V`` and ``C`` in one :class:`Workspace` and lends it to one plan at a time
(:func:`agent.planner.plan_cruise`, whose table never leaves the call): the runtime's one
planning thread reuses the same pages tick after tick; a second thread planning meanwhile gets
fresh arrays (never blocks, never shares).

The values do not depend on the buffer: every row ``k < K`` of ``V`` and ``C`` is written in
full by layer ``k`` before any layer reads it, and the rows past the horizon (the terminal 0)
are zeroed again on a loan where an earlier pass wrote them (the workspace tracks how far its
passes wrote), so a reused buffer gives the same bits as ``np.zeros``.

A buffer is reused while it holds between one and four plans' worth (radius graphs differ in
size from tick to tick, and a bench compares plans with coarser layers). The first is exactly
the size its plan needs (a whole city's ``V``, 72.6 MB, is the same size every tick: an eighth
to spare was 9 MB of address space never written, so never resident: it showed in ``nbytes``
and tracemalloc, not in the RSS); a larger plan allocates a new one with an eighth to spare, a
plan of less than a quarter frees it for one of its own size. :func:`release_workspace` frees
it at once (the runtime on a new bundle).

:data:`PER_GRAPH` keeps what is derived once from a bundle's graph and reused by every radius
graph cut from it (``Graph.subset_of``): the parent's legal turns sorted by (from, to), so a
tick's ``prepare`` filters them instead of sorting its own (issue 20). It holds a few parents
and is cleared with the buffers by :func:`release_workspace`.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from tiles.graph import Graph

F64 = npt.NDArray[np.float64]


class Workspace:
    """Named float64 buffers, lent to one backward pass at a time (:meth:`borrowed`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffers: dict[str, F64] = {}
        #: per buffer, where the elements that may be non-zero end (all after it are 0)
        self._dirty: dict[str, int] = {}

    @contextlib.contextmanager
    def borrowed(self) -> Iterator[Workspace | None]:
        """This workspace for the duration of the block, or None when another plan holds it
        (then the pass allocates its own arrays)."""
        if not self._lock.acquire(blocking=False):
            yield None
            return
        try:
            yield self
        finally:
            self._lock.release()

    def table(self, name: str, rows: int, width: int, zero_from: int) -> F64:
        """A ``(rows, width)`` array from the buffer ``name`` whose rows ``zero_from:`` are 0;
        the rows before hold what an earlier pass left there (the caller overwrites them)."""
        need = rows * width
        buf = self._buffers.get(name)
        if buf is None or buf.shape[0] < need or buf.shape[0] > 4 * need:
            grows = buf is not None and buf.shape[0] < need
            self._buffers.pop(name, None)  # free the old one before taking the new
            del buf
            # the first size exactly (a city's V is the same size every tick); an eighth to
            # spare once plans have grown past it (radius graphs differ from tick to tick)
            buf = np.zeros(need + need // 8 if grows else need, dtype=np.float64)
            self._buffers[name] = buf
            self._dirty[name] = 0
        written = zero_from * width  # the caller writes everything before
        dirty = self._dirty.get(name, need)
        if dirty > written:  # only what an earlier pass wrote there needs zeroing again
            buf[written : min(dirty, need)] = 0.0
        self._dirty[name] = max(written, dirty) if dirty > need else written
        return buf[:need].reshape(rows, width)

    def nbytes(self) -> int:
        return sum(int(b.nbytes) for b in self._buffers.values())

    def release(self) -> None:
        """Free every buffer (waits for a pass that holds the workspace to finish)."""
        with self._lock:
            self._buffers.clear()
            self._dirty.clear()


class PerGraph:
    """Values derived once per graph (a bundle's graph, the parent of the radius graphs), for
    the few most recently used graphs; held by strong reference and checked by identity (a
    weak-keyed cache would be kept alive by values that refer to the graph)."""

    def __init__(self, size: int = 4) -> None:
        self._lock = threading.Lock()
        self._size = size
        self._items: OrderedDict[tuple[int, str], tuple[Graph, Any]] = OrderedDict()

    def get(self, graph: Graph, name: str, make: Callable[[Graph], Any]) -> Any:
        """``make(graph)``, computed once per graph and ``name`` while kept."""
        key = (id(graph), name)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] is graph:
                self._items.move_to_end(key)
                return hit[1]
        value = make(graph)
        with self._lock:
            self._items[key] = (graph, value)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


#: the planner's workspace (one: the runtime plans in one thread)
WORKSPACE = Workspace()
#: per bundle graph, what every tick's radius graph reuses (module docstring)
PER_GRAPH = PerGraph()


def release_workspace() -> None:
    """Free the planner's kept buffers and per-graph values (e.g. when the bundle, so the road
    network, changes)."""
    WORKSPACE.release()
    PER_GRAPH.clear()
