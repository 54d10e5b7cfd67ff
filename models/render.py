"""A map of expected pickups per link for one slot (matplotlib, ``train`` extra, Agg backend)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.demand import TickDemand, _atomic_write
from models.errors import DemandDataError
from models.predict import open_demand, statistical_tick
from tiles import ATTRIBUTION, Graph, TileStore

F64 = npt.NDArray[np.float64]

#: the colour bins of the map: the links under the median, then up to the 75th, 90th, 95th and
#: 99th percentile of the slot's rates, then the hottest 1 %: hot spots stand out by design
HOT_QUANTILES = (0.5, 0.75, 0.9, 0.95, 0.99)
HOT_COLOURS = ("#b8c2cc", "#fee391", "#fec44f", "#fe9929", "#d7301f", "#67000d")
HOT_WIDTHS = (0.6, 0.9, 1.3, 1.8, 2.6, 3.6)
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SLOT = re.compile(r"^\s*([A-Za-z]{3})[a-z]*\s+(\d{1,2}):(\d{2})\s*$")


def hot_spot_bins(rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bin boundaries, bin of each link): quantile bins of the rates (:data:`HOT_QUANTILES`),
    so a map separates the few hot links from the many ordinary ones whatever the slot's level."""
    r = np.asarray(rate, dtype=np.float64)
    lo, hi = (float(r.min()), float(r.max())) if r.size else (0.0, 1.0)
    inner = np.quantile(r, HOT_QUANTILES) if r.size else np.linspace(lo, hi, len(HOT_QUANTILES))
    bounds = np.concatenate([[lo], inner, [max(hi, lo + 1e-9)]])
    bounds = np.maximum.accumulate(bounds + np.arange(bounds.size) * 1e-9)  # strictly rising
    return bounds, np.searchsorted(bounds[1:-1], r, side="right")


def parse_slot(text: str) -> int:
    """``"Tue 18:00"`` -> minute of week (Monday 00:00 = 0)."""
    m = _SLOT.match(text)
    if not m or m.group(1).lower() not in _DAYS:
        raise DemandDataError(f"expected a slot like 'Tue 18:00', got {text!r}")
    hour, minute = int(m.group(2)), int(m.group(3))
    if hour > 23 or minute > 59:
        raise DemandDataError(f"no such time of day: {text!r}")
    return _DAYS.index(m.group(1).lower()) * 1440 + hour * 60 + minute


def render_map(
    demand_dir: str | os.PathLike[str],
    tiles: str | os.PathLike[str],
    minute_of_week: int,
    out: str | os.PathLike[str],
    source: str = "auto",
    title: str | None = None,
) -> dict[str, object]:
    """Draw links coloured by expected pickups per hour; return what was drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise DemandDataError(f"maps need the train extra (matplotlib): {e}") from e
    g, allowed, tick = _link_demand(demand_dir, tiles, minute_of_week, source)
    rate = tick.pickups_per_h[0].astype(np.float64)
    day = _DAYS[minute_of_week // 1440].capitalize()
    hhmm = f"{(minute_of_week % 1440) // 60:02d}:{minute_of_week % 60:02d}"
    fig = _draw(
        g,
        allowed,
        rate,
        title
        or f"Expected street hails per hour, {day} {hhmm} ({tick.source}); "
        f"area total {rate.sum():,.0f}/h",
    )
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda fh: fig.savefig(fh, format="png"))
    plt.close(fig)
    return {
        "out": str(path),
        "source": tick.source,
        "minute_of_week": minute_of_week,
        "links": int(np.sum(allowed)),
        "area_pickups_per_h": round(float(rate.sum()), 1),
        "max_link_pickups_per_h": round(float(rate.max()), 2),
    }


def _link_demand(
    demand_dir: str | os.PathLike[str],
    tiles: str | os.PathLike[str],
    minute_of_week: int,
    source: str,
) -> tuple[Graph, npt.NDArray[np.bool_], TickDemand]:
    """The whole network, its cruisable links at that minute, and their demand (the model's
    for ``auto``/``model`` when the directory ships one, else statistics)."""
    table, model = open_demand(demand_dir)
    if source == "model" and model is None:
        raise DemandDataError(f"{demand_dir} ships no ONNX model (statistics only)")
    with TileStore(tiles) as store:
        if store.meta.get("source_sha256", "") != table.network_sha256:
            raise DemandDataError("the demand was built on another road network")
        g = store.all()
    allowed = g.cruise_allowed(minute_of_week)
    edges = g.edge_id[allowed].astype(np.int64)
    use_model = model is not None and source in ("auto", "model")
    tick: TickDemand = (
        model.tick(edges, minute_of_week, 0)
        if use_model and model is not None
        else statistical_tick(table, edges, minute_of_week, 0)
    )
    return g, allowed, tick


def _draw(g: Graph, allowed: npt.NDArray[np.bool_], rate: F64, title: str) -> Any:
    """The figure: every link in grey, the cruisable ones coloured by their hot-spot bin (the
    busiest on top), the colour bar and the attribution."""
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.colors import BoundaryNorm, ListedColormap

    segs = [g.geometry(i) for i in range(g.n)]
    fig, ax = plt.subplots(figsize=(10, 7.5), dpi=120)
    ax.add_collection(LineCollection(segs, colors="#d0d0d0", linewidths=0.6, zorder=1))
    local = np.flatnonzero(allowed)
    order = np.argsort(rate, kind="stable")  # busiest links drawn last, on top
    bounds, bins = hot_spot_bins(rate)
    lc = LineCollection(
        [segs[int(local[i])] for i in order],
        colors=[HOT_COLOURS[b] for b in bins[order]],
        linewidths=[HOT_WIDTHS[b] for b in bins[order]],
        zorder=2,
    )
    ax.add_collection(lc)
    pts = g.geom_lonlat
    ax.set_xlim(float(pts[:, 0].min()), float(pts[:, 0].max()))
    ax.set_ylim(float(pts[:, 1].min()), float(pts[:, 1].max()))
    ax.set_aspect(1.0 / np.cos(np.radians(float(pts[:, 1].mean()))))
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title(title)
    scale = ScalarMappable(
        norm=BoundaryNorm(bounds, len(HOT_COLOURS)), cmap=ListedColormap(HOT_COLOURS)
    )
    bar = fig.colorbar(scale, ax=ax, shrink=0.8, spacing="uniform", ticks=bounds)
    bar.ax.set_yticklabels(["0" if b < 0.05 else f"{b:.3g}" for b in bounds])
    bar.set_label("hails per hour on the link\n(bins: median, 75th, 90th, 95th, 99th percentile)")
    fig.text(0.01, 0.01, f"Road network {ATTRIBUTION}; trips: NYC TLC", fontsize=7)
    fig.tight_layout()
    return fig
