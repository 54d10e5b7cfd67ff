"""The route read-out's terms of ``Q`` (issue 20): computed one link at a time on Python floats
(a cab's read-out asks a few links per layer) they are, bit for bit, the terms computed for
every link at once (the simulator's many cabs on one table), on the real Manhattan table."""

from __future__ import annotations

import numpy as np
import pytest

from agent.planner import ValueTable
from agent.planner.readout_terms import _LayerTerms, _link_terms, _terms_at
from tests.conftest import EVENING_MINUTE

MINUTE = EVENING_MINUTE  # Tuesday 17:00: the minute of the session's tables


@pytest.fixture(scope="module")
def table(evening_tables: tuple[ValueTable, ValueTable]) -> ValueTable:
    """The Manhattan table of Tuesday 17:00 without passes: the session's (tests/conftest.py)."""
    return evening_tables[0]


def _bits(xs: list[float]) -> np.ndarray:
    return np.asarray(xs, dtype=np.float64).view(np.int64)


def test_one_link_terms_are_the_whole_layers_bit_for_bit(table: ValueTable) -> None:
    n = table.prep.n
    # the first and last layers (the clamp of the lower row) and some between
    for k in (0, 1, 37, table.n_layers // 2, table.n_layers - 2, table.n_layers - 1):
        full = _terms_at(table, k)
        one = [_link_terms(table, k, f) for f in range(n)]
        for j in range(3):
            assert np.array_equal(_bits([t[j] for t in one]), _bits(full[j])), (k, j)


def test_links_shorter_than_a_layer_are_covered(table: ValueTable) -> None:
    """The sub-layer branch (``V`` of the next layer plus the unused part times the slope) is
    among the links compared above, and so is the linear one."""
    shift = table.prep.tau_s / table.prep.step_s
    assert (shift < 1.0).any() and (shift > 1.5).any()


def test_a_layer_asked_for_many_links_computes_them_all_at_once(table: ValueTable) -> None:
    k = 12
    terms = _LayerTerms(table, k)
    full = _terms_at(table, k)
    got = [terms.at(f) for f in range(terms.limit)]
    assert terms.full is None  # a cab's read-out: one link at a time
    got += [terms.at(f) for f in range(terms.limit, table.prep.n)]
    assert terms.full is not None  # the simulator's many cabs: the whole layer
    for j in range(3):
        assert np.array_equal(_bits([t[j] for t in got]), _bits(full[j]))
