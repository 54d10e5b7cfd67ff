"""The one retry backoff (sync.backoff), as the fetcher, the log uploader and the agent use it."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from sync.backoff import backoff_delay_s
from sync.fetcher import FetchConfig, HttpxFetcher
from sync.logs import RetryConfig


def test_doubles_from_the_base_up_to_the_cap() -> None:
    assert [backoff_delay_s(n, 0.5, 4.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff_delay_s(0, 0.5, 4.0) == 0.5  # the first try counts as the first retry
    assert backoff_delay_s(10**9, 1.0, 900.0) == 900.0  # no overflow after days of failures


@given(st.integers(1, 10_000), st.floats(0.01, 100.0), st.floats(0.01, 10_000.0), st.integers())
def test_jitter_stays_in_the_upper_half_of_the_cap(
    n: int, base: float, top: float, seed: int
) -> None:
    cap = backoff_delay_s(n, base, top)
    d = backoff_delay_s(n, base, top, random.Random(seed))
    assert cap / 2 <= d <= cap and d > 0


def test_the_fetcher_and_the_uploader_use_it() -> None:
    c = FetchConfig()
    f = HttpxFetcher(c, rng=random.Random(7))
    try:
        got = [f._backoff(n) for n in range(1, 8)]
    finally:
        f.close()
    rng = random.Random(7)
    want = [backoff_delay_s(n, c.backoff_base_s, c.backoff_max_s, rng) for n in range(1, 8)]
    assert got == want
    r = RetryConfig()
    assert backoff_delay_s(20, r.base_delay_s, r.max_delay_s) == r.max_delay_s
