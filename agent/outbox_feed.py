"""The trip log's sink into the outbox: every trip-log record reaches the outbox once, even
across a crash between the trip log's fsync and the outbox, or an outbox error (issue 13.4)."""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Any

from agent.triplog import log_files, read_records, unpack
from sync import Outbox

log = logging.getLogger(__name__)


class OutboxFeed:
    """The trip log's sink: every trip-log record reaches the outbox once, even across a
    crash between the trip log's fsync and the outbox, or an outbox error.

    The outbox remembers the highest trip-log seq it holds (``source_high``, committed with
    the record). A record right after it is appended; a record further on means some were
    missed (an outbox error), and the missing ones are read back from the trip log first; on
    start-up (:meth:`start`) the trip log's tail after ``source_high`` is enqueued. Records the
    outbox already had (acknowledged or not) are never enqueued again, so the server sees each
    once."""

    def __init__(self, outbox: Outbox, trips_dir: Path) -> None:
        self.outbox = outbox
        self.trips_dir = trips_dir
        self.reconciled = 0  # records read back from the trip log
        self._lock = threading.Lock()

    def start(self, next_seq: int) -> int:
        """Reconcile at start-up (``next_seq``: the trip log's next number); how many records
        were enqueued from the trip log."""
        last = next_seq - 1
        with self._lock:
            high = self.outbox.source_high
            if high is None:  # a new outbox (or one from before sources were kept)
                if last >= 0:
                    log.warning(
                        "new log outbox: trip-log records up to seq %d are not re-sent", last
                    )
                self.outbox.set_source_high(last)
                return 0
            if high > last:  # the trip log was wiped but the outbox kept: it numbers anew
                log.warning(
                    "trip log restarts at seq %d below the outbox's %d: following it",
                    next_seq,
                    high,
                )
                self.outbox.set_source_high(last)
                return 0
            return self._catch_up(high)

    def __call__(self, seq: int, data: bytes) -> None:
        with self._lock:
            high = self.outbox.source_high
            if high is not None and seq <= high:
                return  # already enqueued (read back by a catch-up)
            if high is None or seq == high + 1:
                rec = unpack(data)
                self.outbox.append_many([(rec, _record_time(rec))], sources=[seq])
                return
            n = self._catch_up(high)
            log.warning("trip log: %d record(s) the outbox missed were enqueued again", n)

    def _catch_up(self, high: int) -> int:
        files = log_files(self.trips_dir)
        firsts = [_first_seq(f) for f in files]
        # a file can hold records after ``high`` unless the next file starts at or before it
        keep = [
            f
            for i, f in enumerate(files)
            if i + 1 >= len(files) or firsts[i + 1] is None or (firsts[i + 1] or 0) > high + 1
        ]
        batch: list[tuple[dict[str, Any], float]] = []
        sources: list[int] = []
        n = 0
        for rec in read_records(keep):
            seq = rec.get("seq")
            if type(seq) is not int or seq <= high:
                continue
            batch.append((rec, _record_time(rec)))
            sources.append(seq)
            high = seq
            if len(batch) >= 500:
                self.outbox.append_many(batch, sources=sources)
                n += len(batch)
                batch, sources = [], []
        if batch:
            self.outbox.append_many(batch, sources=sources)
            n += len(batch)
        self.reconciled += n
        return n


def _record_time(rec: dict[str, Any]) -> float:
    t = rec.get("time_s")
    return float(t) if isinstance(t, int | float) and math.isfinite(t) else 0.0


def _first_seq(path: Path) -> int | None:
    stem = path.stem.removeprefix("trip-")
    return int(stem) if stem.isdigit() else None
