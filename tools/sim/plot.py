"""``--plot out.png``: one simulated shift's routes (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tools.sim.engine import RunResult
from tools.sim.world import World


def plot_routes(world: World, runs: Sequence[RunResult], out: str | Path) -> Path:
    """One panel per run: the road network in grey, each test cab's vacant links in its colour
    (line width grows with how often it drove them), pickups as black dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = draw_routes(world, runs)
    path = Path(out)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_routes(world: World, runs: Sequence[RunResult]) -> Any:
    """The figure of :func:`plot_routes` (titles large enough to read, units said)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    g = world.graph
    cols = min(len(runs), 2)
    rows = (len(runs) + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(7.5 * cols, 5.6 * rows), squeeze=False, layout="constrained"
    )
    segs = np.stack([np.c_[g.u_lon, g.u_lat], np.c_[g.v_lon, g.v_lat]], axis=1)
    cmap = plt.get_cmap("tab10")
    for ax, run in zip(axes.ravel(), runs, strict=False):
        ax.add_collection(LineCollection(list(segs), colors="#d0d0d0", linewidths=0.5))
        for k, track in enumerate(run.tracks):
            vacant = [e for e, kind, _ in track if kind != "dropoff"]
            if not vacant:
                continue
            ids, counts = np.unique(np.asarray(vacant), return_counts=True)
            ax.add_collection(
                LineCollection(
                    list(segs[ids]),
                    colors=[cmap(k % 10)],
                    linewidths=0.6 + 1.4 * np.log1p(counts) / np.log1p(counts.max()),
                    alpha=0.8,
                )
            )
        if run.pickups:
            p = np.asarray(run.pickups)
            ax.scatter(
                (g.u_lon[p] + g.v_lon[p]) / 2,
                (g.u_lat[p] + g.v_lat[p]) / 2,
                s=14,
                c="black",
                label="pickup",
                zorder=3,
            )
            ax.legend(loc="lower right", fontsize=10)
        ax.set_title(
            f"{run.policy} (seed {run.seed})\nrevenue {run.revenue_per_h:.1f} per hour, "
            f"{run.pickups_per_h:.2f} pickups per hour (per test cab)",
            fontsize=13,
        )
        ax.set_xlim(float(g.u_lon.min()), float(g.u_lon.max()))
        ax.set_ylim(float(g.u_lat.min()), float(g.u_lat.max()))
        ax.set_aspect(1.0 / np.cos(np.radians(float(g.u_lat.mean()))))
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.ravel()[len(runs) :]:
        ax.axis("off")
    fig.suptitle(
        f"One simulated {world.config.hours:g}-hour shift: the vacant routes of "
        f"{world.config.test_taxis} test cabs (one colour per cab, wider where driven more "
        f"often) among {world.config.taxis}; revenue in the fares' currency",
        fontsize=14,
    )
    fig.supxlabel(
        "Road network © OpenStreetMap contributors (ODbL 1.0)", fontsize=9, x=0.01, ha="left"
    )
    return fig
