"""The clock the runtime reads, injected everywhere so that tests and replays control time.

``now()`` is wall-clock UNIX seconds (what fixes and log records carry), ``monotonic()`` measures
durations, ``sleep(s)`` waits and returns early (``False``) when the clock is stopped, so a
SIGTERM never waits for a long replay pause to end.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; ``False`` when interrupted by :meth:`stop`."""
        ...

    def stop(self) -> None: ...

    @property
    def stopped(self) -> bool: ...


class SystemClock:
    """The real clock; :meth:`sleep` wakes up at once when :meth:`stop` is called."""

    def __init__(self) -> None:
        self._stop = threading.Event()

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> bool:
        if seconds > 0:
            self._stop.wait(seconds)
        return not self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()


class ManualClock:
    """A clock that only moves when told to (or when slept on): for tests and fast replays."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now = float(start_s)
        self._mono = 0.0
        self._stopped = False
        self.slept_s = 0.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds

    def sleep(self, seconds: float) -> bool:
        if self._stopped:
            return False
        if seconds > 0:
            self.advance(seconds)
            self.slept_s += seconds
        return True

    def stop(self) -> None:
        self._stopped = True

    @property
    def stopped(self) -> bool:
        return self._stopped
