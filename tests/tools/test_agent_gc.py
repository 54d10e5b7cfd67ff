"""``nagashi agent run`` holds Python's cyclic garbage collector during start-up (issue 20,
start-up) and releases it at the first instruction, at the end of the run, or after
``GC_HOLD_MAX_S`` at the latest; never when it was off already."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator

import pytest

from tools import cmd_agent


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    was = gc.isenabled()
    yield
    gc.unfreeze()
    if was:
        gc.enable()
    else:
        gc.disable()


def test_held_until_released_once() -> None:
    gc.enable()
    release = cmd_agent._hold_gc()
    assert not gc.isenabled()
    release()
    assert gc.isenabled() and gc.get_freeze_count() > 0
    gc.disable()
    release()  # a second release does nothing
    assert not gc.isenabled()


def test_released_at_the_latest_after_the_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cmd_agent, "GC_HOLD_MAX_S", 0.05)
    gc.enable()
    cmd_agent._hold_gc()
    assert not gc.isenabled()
    deadline = time.monotonic() + 30.0
    while not gc.isenabled() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    cmd_agent._hold_gc()()
    assert not gc.isenabled()
