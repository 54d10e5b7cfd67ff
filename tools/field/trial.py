"""``nagashi report trial``: a per-shift summary of field-trial logs, with plots.

Per shift (one agent run):

* ``distance_km``: driven distance along the 1 Hz track (see :mod:`tools.field.shifts` for what is
  not counted: jitter of a standing cab, gaps over 60 s, jumps over 50 m/s);
* ``occupied_share``: the share of that distance driven with the meter on, when the shift has
  taximeter events (``POST /v1/meter``); ``None`` otherwise (not 0: unknown);
* ``guidance_share``: ticks with a validated route / ticks;
* ``fallbacks_by_reason``: reason codes of the fallback ticks (a tick may have several).

Plots (matplotlib, Agg backend, PNG): the track coloured by guidance or fallback, and the
fallback reasons as bars.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from agent.triplog import ReadReport, read_trip_log
from tools.field.logpaths import trip_log_paths
from tools.field.shifts import Shift, group_shifts

log = logging.getLogger(__name__)

GUIDE_COLOUR = "#1e88e5"
FALLBACK_COLOUR = "#ffb300"


@dataclass(frozen=True)
class ShiftSummary:
    run_id: str
    vehicle_id: str
    start: str | None
    end: str | None
    duration_h: float
    distance_km: float
    occupied_share: float | None
    ticks: int
    guidance_share: float | None
    fallback_ticks: int
    fallbacks_by_reason: dict[str, int]
    meter_events: int
    plot: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, tz=UTC).isoformat()


def summarize(s: Shift) -> ShiftSummary:
    steps = s.steps_m()
    dist = float(steps.sum())
    occ_share: float | None = None
    if s.meters and len(s.track) >= 2:
        times = np.array([p[0] for p in s.track[1:]], dtype=np.float64)
        occ = s.occupied_at(times)
        occ_share = float(steps[occ].sum() / dist) if dist > 0 else 0.0
    kinds = [t.get("instruction", {}).get("kind") for t in s.ticks]
    reasons: Counter[str] = Counter()
    fallback_ticks = 0
    for t, k in zip(s.ticks, kinds, strict=True):
        if k == "fallback":
            fallback_ticks += 1
            reasons.update(t.get("instruction", {}).get("reason_codes", []))
    start, end = s.start_s, s.end_s
    return ShiftSummary(
        run_id=s.run_id,
        vehicle_id=s.vehicle_id,
        start=_iso(start),
        end=_iso(end),
        duration_h=0.0 if start is None or end is None else round((end - start) / 3600.0, 4),
        distance_km=round(dist / 1000.0, 3),
        occupied_share=None if occ_share is None else round(occ_share, 4),
        ticks=len(s.ticks),
        guidance_share=round(kinds.count("route") / len(kinds), 4) if kinds else None,
        fallback_ticks=fallback_ticks,
        fallbacks_by_reason=dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        meter_events=len(s.meters),
    )


def plot_shift(s: Shift, summary: ShiftSummary, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = draw_shift(s, summary)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def draw_shift(s: Shift, summary: ShiftSummary) -> Any:
    """The shift's figure: the drive with its guidance and fallback ticks, and the fallback
    ticks by reason (a count axis: whole numbers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax_map, ax_bar) = plt.subplots(
        1, 2, figsize=(13, 6), gridspec_kw={"width_ratios": [1.3, 1]}
    )
    if s.track:
        lon = np.array([p[1] for p in s.track])
        lat = np.array([p[2] for p in s.track])
        ax_map.plot(lon, lat, color="#9e9e9e", lw=1, zorder=1, label="drive")
    for kind, colour, label in (
        ("route", GUIDE_COLOUR, "guidance"),
        ("fallback", FALLBACK_COLOUR, "follow the road"),
    ):
        pts = [
            (t["fix"]["lon"], t["fix"]["lat"])
            for t in s.ticks
            if t.get("instruction", {}).get("kind") == kind and t.get("fix")
        ]
        if pts:
            arr = np.array(pts)
            ax_map.scatter(arr[:, 0], arr[:, 1], s=14, color=colour, label=label, zorder=2)
    ax_map.set_aspect(1.0 / np.cos(np.radians(s.track[0][2])) if s.track else 1.0)
    ax_map.set_title(f"shift {s.run_id[:8]}: {summary.distance_km:.1f} km")
    ax_map.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax_map.set_xlabel("longitude")
    ax_map.set_ylabel("latitude")
    ax_map.legend(loc="best", fontsize=8)
    reasons = list(summary.fallbacks_by_reason.items())
    if reasons:
        names = [k for k, _ in reasons][::-1]
        counts = [v for _, v in reasons][::-1]
        ax_bar.barh(names, counts, color=FALLBACK_COLOUR)
        ax_bar.tick_params(axis="y", labelsize=8)
    else:
        ax_bar.text(0.5, 0.5, "no fallbacks", ha="center", va="center")
    share = "n/a" if summary.guidance_share is None else f"{summary.guidance_share:.0%}"
    ax_bar.set_title(f"fallback ticks by reason (guidance {share} of {summary.ticks} ticks)")
    ax_bar.set_xlabel("ticks (count)")
    ax_bar.xaxis.set_major_locator(MaxNLocator(integer=True))  # counts: whole numbers only
    fig.tight_layout()
    return fig


def report_trial(
    logs: Iterable[str | os.PathLike[str]], out_dir: Path | None = None
) -> dict[str, Any]:
    """Summaries of every shift in the logs (and their plots under ``out_dir``)."""
    rr = ReadReport()
    shifts = group_shifts(read_trip_log(trip_log_paths(logs), rr))
    summaries: list[ShiftSummary] = []
    for s in shifts:
        summ = summarize(s)
        if out_dir is not None and (s.track or s.ticks):
            path = plot_shift(s, summ, out_dir / f"trial-{s.run_id[:16]}.png")
            summ = ShiftSummary(**{**summ.to_json(), "plot": str(path)})
        summaries.append(summ)
    return {
        "schema_version": 1,
        "files": [str(f) for f in rr.files],
        "torn_tails": [f"{p}@{off}" for p, off in rr.torn_tails],
        "shifts": [s.to_json() for s in summaries],
    }
