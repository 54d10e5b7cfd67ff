"""Trip-log records grouped into shifts (one agent run each), for exports and trial reports.

A shift is every record with the same ``run_id``: its ``start`` and ``stop`` records, its
ticks, its taximeter events, and the 1 Hz track the ticks (and the stop record) carry.
Records without a ``run_id`` (from tools, or older agents) form the shift ``"unknown"``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tiles.geo import haversine_m

#: Steps slower than this (at the later fix) are GPS jitter of a standing cab, not distance.
MIN_MOVING_SPEED_MPS = 0.5
#: Steps across a gap longer than this, or faster than the speed below, are not driven distance.
MAX_STEP_GAP_S = 60.0
MAX_STEP_SPEED_MPS = 50.0


@dataclass
class Shift:
    run_id: str
    vehicle_id: str = ""
    start: dict[str, Any] | None = None
    stop: dict[str, Any] | None = None
    ticks: list[dict[str, Any]] = field(default_factory=list)
    meters: list[tuple[float, bool]] = field(default_factory=list)  # (time_s, occupied)
    track: list[tuple[float, float, float, float | None]] = field(default_factory=list)

    @property
    def start_s(self) -> float | None:
        times = [t[0] for t in self.track] + [float(r["time_s"]) for r in self.ticks]
        return min(times) if times else None

    @property
    def end_s(self) -> float | None:
        times = [t[0] for t in self.track] + [float(r["time_s"]) for r in self.ticks]
        return max(times) if times else None

    def steps_m(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Driven metres of each track step (0 for jitter, gaps and jumps), len(track) - 1."""
        if len(self.track) < 2:
            return np.zeros(0)
        a = np.array([[t, lon, lat] for t, lon, lat, _ in self.track], dtype=np.float64)
        speed = np.array([math.nan if s is None else s for *_, s in self.track], dtype=np.float64)
        d = haversine_m(a[:-1, 1], a[:-1, 2], a[1:, 1], a[1:, 2])
        dt = np.diff(a[:, 0])
        ok = (dt > 0) & (dt <= MAX_STEP_GAP_S)
        with np.errstate(divide="ignore", invalid="ignore"):
            ok &= d / np.where(dt > 0, dt, 1.0) <= MAX_STEP_SPEED_MPS
        moving = ~(speed[1:] < MIN_MOVING_SPEED_MPS)  # NaN (unknown) counts as moving
        return np.where(ok & moving, d, 0.0)

    def occupied_at(self, times: np.ndarray[Any, np.dtype[np.float64]]) -> np.ndarray[Any, Any]:
        """Meter state at each time (False before the first event)."""
        out = np.zeros(times.shape, dtype=bool)
        for t, occ in sorted(self.meters):
            out[times >= t] = occ
        return out


def group_shifts(records: Iterable[dict[str, Any]]) -> list[Shift]:
    shifts: dict[str, Shift] = {}
    for r in records:
        kind = r.get("kind")
        rid = str(r.get("run_id") or "unknown")
        s = shifts.get(rid)
        if s is None:
            s = shifts[rid] = Shift(rid)
        if kind == "start":
            s.start = r
            s.vehicle_id = str(r.get("vehicle_id", ""))
        elif kind == "stop":
            s.stop = r
            _add_track(s, r.get("track"))
        elif kind == "tick":
            s.ticks.append(r)
            if not s.vehicle_id and r.get("vehicle_id"):
                s.vehicle_id = str(r["vehicle_id"])
            _add_track(s, r.get("track"))
        elif kind == "meter" and isinstance(r.get("occupied"), bool):
            s.meters.append((float(r["time_s"]), bool(r["occupied"])))
    for s in shifts.values():
        s.track.sort(key=lambda p: p[0])
        s.ticks.sort(key=lambda r: (float(r["time_s"]), int(r.get("seq", 0))))
    return sorted(shifts.values(), key=lambda s: (s.start_s or 0.0, s.run_id))


def _add_track(s: Shift, track: Any) -> None:
    if not isinstance(track, list):
        return
    for p in track:
        if isinstance(p, list) and len(p) >= 3 and None not in p[:3]:
            speed = p[3] if len(p) > 3 else None
            s.track.append((float(p[0]), float(p[1]), float(p[2]), speed))
