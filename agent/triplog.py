"""The trip log: every planning tick as one msgpack record, appended durably to size-rotated files.

Files are plain msgpack streams (``msgpack.Unpacker`` reads them) named
``trip-<first seq, 12 digits>.msgpack`` in one directory, so name order is record order. Each
record is a map with at least::

    schema_version  int    (this module's SCHEMA_VERSION; readers keep unknown fields)
    kind            str    "start" | "tick" | "meter" | "bundle" | "stop"
    seq             int    strictly increasing per vehicle, across restarts and files
    time_s          float  UNIX seconds of the decision (the GPS source's clock)
    run_id          str    one agent run (a shift)

Durability: :meth:`TripLog.append` returns only after the record's bytes are written with
``O_APPEND`` and ``fsync``'d (and the directory fsync'd when a file is created); an ``OSError``
is raised as :class:`~agent.errors.TripLogError`, never swallowed. After that the record is
handed to the upload sink (the sync outbox); a sink failure is logged and counted in
:meth:`TripLog.status`, and the record stays in its file. On start the last file is scanned: a
torn tail (power lost mid-append, so never acknowledged) is cut off, and numbering continues.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from agent.errors import TripLogError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PREFIX = "trip-"
SUFFIX = ".msgpack"
MAX_RECORD_BYTES = 16 * 1024 * 1024

Sink = Callable[[int, bytes], None]


@dataclass(frozen=True)
class TripLogConfig:
    """Where and how the trip log is written (bytes)."""

    directory: Path
    max_file_bytes: int = 8 * 1024 * 1024  # rotate when the current file reaches this size
    max_total_bytes: int = 1024 * 1024 * 1024  # oldest rotated files deleted above this (loudly)
    fsync: bool = True  # off only for benchmarks of the planner, never in a cab


def _default(obj: Any) -> Any:
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot log a {type(obj).__name__}: convert it explicitly")


def pack(record: dict[str, Any]) -> bytes:
    """The exact bytes of a record (floats as float64, numpy scalars as Python numbers)."""
    try:
        return bytes(msgpack.packb(record, use_bin_type=True, default=_default))
    except (TypeError, ValueError, OverflowError) as e:
        raise TripLogError(f"record cannot be packed: {e}") from e


def unpack(data: bytes) -> dict[str, Any]:
    try:
        r = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (msgpack.UnpackException, ValueError) as e:
        raise TripLogError(f"not a msgpack record: {e}") from e
    if not isinstance(r, dict):
        raise TripLogError("a trip-log record must be a map")
    return r


@dataclass
class ReadReport:
    """What reading a log found besides its records."""

    files: list[Path] = field(default_factory=list)
    torn_tails: list[tuple[Path, int]] = field(default_factory=list)  # (file, byte offset)


def log_files(path: str | os.PathLike[str]) -> list[Path]:
    """The log files of a directory in record order, or ``[path]`` for a single file."""
    p = Path(path)
    if p.is_dir():
        return sorted(q for q in p.iterdir() if q.name.startswith(PREFIX) and q.suffix == SUFFIX)
    if not p.is_file():
        raise TripLogError(f"trip log not found: {p}")
    return [p]


def _scan(path: Path, report: ReadReport | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(offset after the record, record) for each complete record of one file."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed below; a generator)
    except OSError as e:
        raise TripLogError(f"cannot open trip log {path}: {e}") from e
    with fh:
        unpacker = msgpack.Unpacker(
            fh, raw=False, strict_map_key=False, max_buffer_size=MAX_RECORD_BYTES
        )
        good = 0
        while True:
            try:
                r = unpacker.unpack()
            except msgpack.OutOfData:
                break
            except (msgpack.UnpackException, ValueError) as e:
                log.warning("trip log %s: unreadable data at byte %d (%s)", path, good, e)
                if report is not None:
                    report.torn_tails.append((path, good))
                return
            good = unpacker.tell()
            if isinstance(r, dict):
                yield good, r
        size = path.stat().st_size
        if good < size:
            log.warning("trip log %s: torn record at byte %d of %d", path, good, size)
            if report is not None:
                report.torn_tails.append((path, good))


def read_records(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    report: ReadReport | None = None,
) -> Iterator[dict[str, Any]]:
    """Every complete record of log files or directories, in order (unknown fields kept)."""
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    for item in items:
        for f in log_files(item):
            if report is not None:
                report.files.append(f)
            for _, r in _scan(f, report):
                yield r


#: The kinds of record the agent writes (readers keep records of other kinds).
RECORD_KINDS = frozenset({"start", "tick", "stop", "meter", "bundle"})


def read_trip_log(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    report: ReadReport | None = None,
) -> list[dict[str, Any]]:
    """:func:`read_records` as a list; TripLogError when not one of them is a trip-log record
    (a wrong file given by mistake, rather than an empty drive)."""
    records = list(read_records(paths, report))
    if not any(r.get("kind") in RECORD_KINDS for r in records):
        items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
        names = ", ".join(str(p) for p in items)
        raise TripLogError(f"no trip-log records in {names}: is it a nagashi trip log?")
    return records


class TripLog:
    """Appends records durably; thread-safe (the loop and the HTTP thread both write)."""

    def __init__(self, config: TripLogConfig, sink: Sink | None = None) -> None:
        self.config = config
        self._sink = sink
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._file: Path | None = None
        self._file_bytes = 0
        self.records_written = 0
        self.sink_errors = 0
        self.files_deleted = 0
        try:
            config.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TripLogError(f"cannot create trip-log directory {config.directory}: {e}") from e
        self.next_seq = self._recover()

    def _recover(self) -> int:
        files = log_files(self.config.directory)
        if not files:
            return 0
        last = files[-1]
        end, seq = 0, -1
        for end, r in _scan(last, None):  # noqa: B007 (end is used after the loop)
            seq = int(r.get("seq", seq))
        if end < last.stat().st_size:
            log.warning("trip log %s: cutting a torn tail at byte %d", last, end)
            with open(last, "rb+") as fh:
                fh.truncate(end)
                os.fsync(fh.fileno())
        if seq < 0:
            stem = last.stem.removeprefix(PREFIX)
            seq = int(stem) - 1 if stem.isdigit() else -1
        return seq + 1

    def will_rotate(self) -> bool:
        """Whether the next record starts a new file (so it must not refer to earlier ones)."""
        with self._lock:
            return self._fd is None or self._file_bytes >= self.config.max_file_bytes

    def set_sink(self, sink: Sink | None) -> None:
        with self._lock:
            self._sink = sink

    def append(self, record: dict[str, Any]) -> int:
        """Write one record durably (adds ``schema_version`` and ``seq``); return its seq."""
        with self._lock:
            seq = self.next_seq
            full = {"schema_version": SCHEMA_VERSION, "seq": seq, **record}
            full["seq"] = seq
            data = pack(full)
            if len(data) > MAX_RECORD_BYTES:
                raise TripLogError(f"record of {len(data)} bytes exceeds {MAX_RECORD_BYTES}")
            try:
                if self._fd is None or self._file_bytes >= self.config.max_file_bytes:
                    self._rotate(seq)
                assert self._fd is not None
                view = memoryview(data)
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
                if self.config.fsync:
                    os.fsync(self._fd)
            except OSError as e:
                raise TripLogError(f"cannot write trip log {self._file}: {e}") from e
            self._file_bytes += len(data)
            self.next_seq = seq + 1
            self.records_written += 1
            sink = self._sink
        if sink is not None:
            try:
                sink(seq, data)
            except Exception as e:  # the record is safe in its file; make the failure visible
                self.sink_errors += 1
                log.error("trip log: record %d not handed to the outbox: %s", seq, e)
        return seq

    def _rotate(self, seq: int) -> None:
        self._close_fd()
        path = self.config.directory / f"{PREFIX}{seq:012d}{SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._file = path
        self._file_bytes = os.fstat(self._fd).st_size
        if self.config.fsync:
            dfd = os.open(self.config.directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        self._enforce_total()

    def _enforce_total(self) -> None:
        files = log_files(self.config.directory)
        sizes = [f.stat().st_size for f in files]
        total = sum(sizes)
        for f, size in zip(files[:-1], sizes[:-1], strict=True):
            if total <= self.config.max_total_bytes:
                break
            log.error("trip log above %d bytes: deleting the oldest file %s", total, f.name)
            f.unlink()
            total -= size
            self.files_deleted += 1

    def _close_fd(self) -> None:
        if self._fd is not None:
            if self.config.fsync:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        with self._lock:
            try:
                self._close_fd()
            except OSError as e:
                raise TripLogError(f"cannot close trip log {self._file}: {e}") from e

    def status(self) -> dict[str, Any]:
        with self._lock:
            files = log_files(self.config.directory)
            return {
                "directory": str(self.config.directory),
                "current_file": None if self._file is None else self._file.name,
                "files": len(files),
                "bytes": sum(f.stat().st_size for f in files),
                "records_written": self.records_written,
                "next_seq": self.next_seq,
                "sink_errors": self.sink_errors,
                "files_deleted": self.files_deleted,
            }
