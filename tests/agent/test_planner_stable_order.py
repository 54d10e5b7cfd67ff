"""``_order.stable_argsort`` (the dead-end peel's order, every tick) is
``np.argsort(kind="stable")``: the same permutation for narrow, negative and wide keys; the
successor columns' order by degree is that of a stable argsort of ``-deg``."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from agent.planner._order import stable_argsort as _stable_argsort

_KEYS = st.one_of(
    hnp.arrays(np.int64, st.integers(0, 400), elements=st.integers(-5, 40)),
    hnp.arrays(np.int64, st.integers(0, 400), elements=st.integers(-(2**40), 2**40)),
    hnp.arrays(np.int64, st.integers(0, 50), elements=st.integers(-(2**62), 2**62)),
    hnp.arrays(np.int32, st.integers(0, 400), elements=st.integers(0, 70_000)),
)


@settings(max_examples=200, deadline=None)
@given(keys=_KEYS)
def test_stable_argsort_is_numpys_stable_order(keys: np.ndarray) -> None:
    got = _stable_argsort(keys)
    assert got.dtype == np.int64
    assert np.array_equal(got, np.argsort(keys, kind="stable"))


def test_ties_keep_their_order_at_every_width() -> None:
    rng = np.random.default_rng(5)
    for span in (3, 2**16 - 1, 2**16, 2**20):
        keys = rng.integers(0, span, 5000) // max(span // 50, 1)  # many ties
        assert np.array_equal(_stable_argsort(keys), np.argsort(keys, kind="stable"))


def _columns_by_argsort(prep: Any, cz: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The successor columns as first written: sources by a stable argsort of ``-deg``."""
    pos = np.full(prep.n, -1, dtype=np.int64)
    pos[cz] = np.arange(cz.shape[0], dtype=np.int64)
    keep = pos[prep.arc_dst] >= 0
    src, dst = prep.arc_src[keep], pos[prep.arc_dst[keep]]
    deg = np.bincount(src, minlength=prep.n)
    has = np.flatnonzero(deg > 0)
    order = has[np.argsort(-deg[has], kind="stable")]
    first = np.zeros(prep.n + 1, dtype=np.int64)
    np.cumsum(deg, out=first[1:])
    columns = [dst[first[order[deg[order] > d]] + d] for d in range(int(deg.max(initial=0)))]
    return order, columns or [np.zeros(0, dtype=np.int64)]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_the_successor_columns_are_those_of_a_stable_argsort_by_degree(seed: int) -> None:
    """``core._successor_columns`` orders the sources by degree with one ``flatnonzero`` per
    degree: the same sources, order and columns as a stable argsort of ``-deg``, on random
    graphs (parallel turns, links without any, enterable subsets ``cz`` of any size)."""
    from agent.planner.core import _successor_columns

    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 30))
    arcs = int(rng.integers(0, 4 * n + 1))
    src = np.sort(rng.integers(0, max(n, 1), arcs)).astype(np.int64) if n else np.zeros(0, np.int64)
    dst = rng.integers(0, max(n, 1), arcs).astype(np.int64) if n else np.zeros(0, np.int64)
    cz = np.flatnonzero(rng.random(n) < rng.uniform(0.0, 1.0)).astype(np.int64)
    prep = SimpleNamespace(n=n, arc_src=src, arc_dst=dst)
    order, columns = _successor_columns(prep, cz)  # type: ignore[arg-type]
    want_order, want = _columns_by_argsort(prep, cz)
    assert order.dtype == np.int64 and np.array_equal(order, want_order)
    assert len(columns) == len(want)
    for got, w in zip(columns, want, strict=True):
        assert got.dtype == np.int64 and np.array_equal(got, w)
