"""``core._stable_argsort`` (the successor columns' and the dead-end peel's order, every tick)
is ``np.argsort(kind="stable")``: the same permutation for narrow, negative and wide keys."""

from __future__ import annotations

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
