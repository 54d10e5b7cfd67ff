"""Replay: recompute logged decisions with the bundle they were made with, compare the bytes.

For each ``tick`` record the logged inputs (fix, previous fix, time, locale, trigger, the cab's
recent passes, the route it was shown and the live snapshot it used) go through
:func:`agent.decide.decide` again with the bundle named in the record. The live snapshot is
named in the record (``live``: area, version, sha256) and read back from the agent's snapshot
archive (``<data dir>/live/``, :class:`sync.live.SnapshotArchive`); a tick whose snapshot is not
there is reported as such (:attr:`TickReplay.snapshot_missing`), not replayed. Each part of the
new record is packed and compared with the logged one byte for byte:

* derived inputs: ``minute_of_week``, ``match``, ``demand`` (by ``demand_sha256``), ``params``,
  ``fleet`` (the planner's view of the other cabs; in records that have it);
* outputs: ``plan`` (the planner's canonical JSON), ``safety`` (the verdict), ``instruction``.

A difference is reported with what differs: the parts and their first differing fields, and
whether the bundle id or the code version (:func:`agent.version.code_version`) differ from the
logged ones, which is usually why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.bundle import LoadedBundle, load_bundle
from agent.decide import RECORD_KIND, LiveInput, LiveSnapshot, TickInputs, decide
from agent.errors import BundleLoadError, ReplayError
from agent.gps import Fix
from agent.triplog import pack, read_records
from agent.version import code_version
from sync import SyncError
from tools.field.logpaths import TRIPS_DIR, trip_log_paths

log = logging.getLogger(__name__)

COMPARED = (
    "minute_of_week",
    "match",
    "params",
    "demand_sha256",
    "recent",
    "fleet",
    "plan",
    "safety",
    "instruction",
)
#: compared only when the logged record has them (logs written before they existed)
OPTIONAL = frozenset({"fleet", "recent"})
#: the snapshot archive beside the trip logs in an agent's data folder
LIVE_DIR = "live"
MAX_DIFF_LINES = 8


@dataclass
class TickReplay:
    seq: int
    time_s: float
    identical: bool
    differing: list[str] = field(default_factory=list)  # parts that differ
    details: list[str] = field(default_factory=list)  # first differing fields
    bundle_logged: str = ""
    bundle_used: str = ""
    code_logged: dict[str, Any] = field(default_factory=dict)
    demand_verified: bool | None = None  # the logged demand bytes match their logged hash
    #: the live snapshot the tick used is not in the archive: the tick was not replayed
    snapshot_missing: str = ""

    @property
    def bundle_differs(self) -> bool:
        return self.bundle_logged != self.bundle_used

    @property
    def code_differs(self) -> bool:
        return self.code_logged != code_version()

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time_s": self.time_s,
            "identical": self.identical,
            "differing": self.differing,
            "details": self.details,
            "bundle_logged": self.bundle_logged,
            "bundle_used": self.bundle_used,
            "bundle_differs": self.bundle_differs,
            "code_logged": self.code_logged,
            "code_now": code_version(),
            "code_differs": self.code_differs,
            "demand_verified": self.demand_verified,
            "snapshot_missing": self.snapshot_missing,
        }


def _fix(r: Any) -> Fix | None:
    return None if r is None else Fix.from_record(r)


def diff_values(a: Any, b: Any, path: str = "", out: list[str] | None = None) -> list[str]:
    """Human lines for the first differences between two plain values."""
    out = [] if out is None else out
    if len(out) >= MAX_DIFF_LINES:
        return out
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if len(out) >= MAX_DIFF_LINES:
                break
            p = f"{path}.{k}" if path else str(k)
            if k not in a:
                out.append(f"{p}: only in the replay")
            elif k not in b:
                out.append(f"{p}: only in the log")
            elif pack({"v": a[k]}) != pack({"v": b[k]}):
                diff_values(a[k], b[k], p, out)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if pack({"v": x}) != pack({"v": y}):
                diff_values(x, y, f"{path}[{i}]", out)
                if len(out) >= MAX_DIFF_LINES:
                    break
        return out
    text_a, text_b = repr(a), repr(b)
    out.append(f"{path}: logged {text_a[:80]} / replayed {text_b[:80]}")
    return out


def _plain(part: str, v: Any) -> Any:
    """Plan JSON bytes -> dict for field-level diffs."""
    if part == "plan" and isinstance(v, bytes | bytearray):
        return json.loads(v)
    return v


class SnapshotLookup:
    """Live snapshots by (area, version, sha256) from one or more archive folders."""

    def __init__(self, dirs: Iterable[str | os.PathLike[str]]) -> None:
        self.dirs = [Path(d) for d in dirs]
        self._cache: dict[tuple[str, int, str], LiveSnapshot | None] = {}

    def get(self, area: str, version: int, sha256: str) -> LiveSnapshot | None:
        key = (area, version, sha256)
        if key not in self._cache:
            self._cache[key] = self._find(area, version, sha256)
        return self._cache[key]

    def _find(self, area: str, version: int, sha256: str) -> LiveSnapshot | None:
        from sync.live import SnapshotArchive

        for d in self.dirs:
            try:
                return SnapshotArchive(d).get(area, version=version, sha256=sha256)
            except SyncError as e:  # absent, damaged, a bad name: try the next folder
                log.debug("snapshot %s v%d not in %s: %s", area, version, d, e)
        return None

    def describe(self) -> str:
        return ", ".join(str(d) for d in self.dirs) or "no snapshot folder"


def default_snapshot_dirs(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
) -> list[Path]:
    """The snapshot archives of the agents whose trip logs ``paths`` are: ``live/`` beside
    each ``trips/`` folder (given as the folder, a file in it, or the agent's data folder)."""
    out: list[Path] = []
    for p in trip_log_paths(paths):
        trips = p if p.is_dir() else p.parent
        cand = trips.parent / LIVE_DIR
        if trips.name == TRIPS_DIR and cand.is_dir() and cand not in out:
            out.append(cand)
    return out


def _live_input(
    rec: Any, snapshots: SnapshotLookup | None, seq: Any
) -> tuple[LiveInput | None, str]:
    """The tick's live input from its ``live`` record, and what is missing ("" if nothing)."""
    if rec is None:
        return None, ""
    try:
        area = str(rec["area"])
        version = rec.get("version")
        sha = rec.get("sha256")
        own_link = int(rec.get("own_link", -1))
        own_route = tuple(int(e) for e in rec.get("own_route") or ())
        age_s = float(rec.get("age_s", 0.0))
        reason = str(rec.get("reason", ""))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ReplayError(f"tick record {seq}: its live input is unreadable: {e}") from e
    if version is None:
        return LiveInput(area, None, age_s, own_link, own_route, reason), ""
    snap = None if snapshots is None else snapshots.get(area, int(version), str(sha))
    if snap is None:
        where = "no snapshot folder" if snapshots is None else snapshots.describe()
        return None, (
            f"live snapshot {area} v{version} ({str(sha)[:12]}) is not in the archive ({where})"
        )
    return LiveInput(area, snap, age_s, own_link, own_route, reason), ""


def replay_tick(
    record: dict[str, Any], lb: LoadedBundle, snapshots: SnapshotLookup | None = None
) -> TickReplay:
    """Recompute one logged tick with ``lb`` and compare (see module docstring); the live
    snapshot it used comes from ``snapshots``."""
    if record.get("kind") != RECORD_KIND:
        raise ReplayError(f"record {record.get('seq')} is a {record.get('kind')!r}, not a tick")
    live, missing = _live_input(record.get("live"), snapshots, record.get("seq"))
    if missing:
        return TickReplay(
            seq=int(record.get("seq", -1)),
            time_s=float(record.get("time_s", 0.0)),
            identical=False,
            bundle_logged=str((record.get("bundle") or {}).get("id", "")),
            bundle_used=lb.bundle_id,
            code_logged=dict(record.get("code") or {}),
            snapshot_missing=missing,
        )
    try:
        inputs = TickInputs(
            now_s=float(record["time_s"]),
            fix=_fix(record.get("fix")),
            previous_fix=_fix(record.get("previous_fix")),
            locale=str(record.get("locale", "en")),
            trigger=str(record.get("trigger", "")),
            last_moving_fix=_fix(record.get("last_moving_fix")),
            last_pass_age_s=tuple(
                (int(e), float(a)) for e, a in record.get("last_pass_age_s") or ()
            ),
            previous_route=tuple(int(e) for e in record.get("previous_route") or ()),
            live=live,
            spread_salt=_salt(record.get("spread_salt")),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ReplayError(f"tick record {record.get('seq')} lacks its inputs: {e}") from e
    new = decide(lb, inputs).to_record(lb)
    old_ins = record.get("instruction")
    if isinstance(old_ins, dict) and isinstance(new.get("instruction"), dict):
        new["instruction"]["tick_seq"] = old_ins.get("tick_seq")  # set by the runtime
    out = TickReplay(
        seq=int(record.get("seq", -1)),
        time_s=inputs.now_s,
        identical=True,
        bundle_logged=str((record.get("bundle") or {}).get("id", "")),
        bundle_used=lb.bundle_id,
        code_logged=dict(record.get("code") or {}),
    )
    logged_demand = record.get("demand")
    if logged_demand is not None and record.get("demand_sha256") is not None:
        out.demand_verified = hashlib.sha256(pack(logged_demand)).hexdigest() == record.get(
            "demand_sha256"
        )
    for part in COMPARED:
        if part in OPTIONAL and part not in record:
            continue
        if pack({"v": record.get(part)}) != pack({"v": new.get(part)}):
            out.identical = False
            out.differing.append(part)
            if part == "demand_sha256" and logged_demand is not None and new["demand"]:
                diff_values(logged_demand, new["demand"], "demand", out.details)
            else:
                diff_values(
                    _plain(part, record.get(part)), _plain(part, new.get(part)), part, out.details
                )
    if out.demand_verified is False:
        out.identical = False
        out.differing.append("demand (logged bytes do not match their hash)")
    return out


class BundleCache:
    """Bundles by id, opened from ``bundle_dir`` (a store, a folder of bundles or one bundle)."""

    def __init__(self, bundle_dir: str | os.PathLike[str], timezone: str | None = None) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.timezone = timezone
        self._open: dict[str, LoadedBundle] = {}

    def get(self, bundle_id: str) -> LoadedBundle:
        lb = self._open.get(bundle_id)
        if lb is not None:
            return lb
        try:
            lb = load_bundle(self.bundle_dir, bundle_id=bundle_id, timezone=self.timezone)
        except BundleLoadError:
            lb = load_bundle(self.bundle_dir, timezone=self.timezone)  # one bundle given
            log.warning(
                "bundle %s not found; replaying with %s", str(bundle_id)[:12], lb.bundle_id[:12]
            )
        self._open[bundle_id] = lb
        return lb

    def close(self) -> None:
        for lb in self._open.values():
            lb.close()


def replay_log(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    bundle_dir: str | os.PathLike[str],
    *,
    tick: int | None = None,
    timezone: str | None = None,
    snapshots: Iterable[str | os.PathLike[str]] | None = None,
) -> Iterator[TickReplay]:
    """Replay every tick of a log (or only the tick with seq ``tick``), in order. The live
    snapshots come from the folders ``snapshots`` (default: :func:`default_snapshot_dirs`)."""
    bundles = BundleCache(bundle_dir, timezone)
    lookup = SnapshotLookup(default_snapshot_dirs(paths) if snapshots is None else snapshots)
    found = False
    try:
        for r in read_records(trip_log_paths(paths)):
            if r.get("kind") != RECORD_KIND:
                continue
            if tick is not None and r.get("seq") != tick:
                continue
            found = True
            bid = str((r.get("bundle") or {}).get("id", ""))
            yield replay_tick(r, bundles.get(bid), lookup)
            if tick is not None:
                return
    finally:
        bundles.close()
    if not found:
        raise ReplayError(
            "no tick record in the log" if tick is None else f"no tick with seq {tick} in the log"
        )


def _salt(raw: object) -> int | None:
    """A tick record's ``spread_salt`` (absent in logs from before the spread: None)."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ValueError(f"spread_salt is {raw!r}, not an integer")
    return raw
