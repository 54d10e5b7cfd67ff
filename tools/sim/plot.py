"""``--plot out.png``: one simulated shift's routes; ``--adoption-plot out.png``: revenue per hour
against adoption (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tools.sim.result import RunResult
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


def plot_adoption(doc: Mapping[str, Any], out: str | Path) -> Path:
    """Revenue per hour against the share of the fleet on the policy under test (the table's
    ``adoption``): the adopters' and the whole fleet's, with 95 % intervals, beside the
    reference (everyone on it) on the same runs. Written atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tiles.fileio import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ref = doc.get("reference", "hotspot")
    styles = (
        ("adopters_revenue_per_h", "adopters ({p})", "o-"),
        ("fleet_revenue_per_h", "whole fleet ({p} + {ref})", "s-"),
        ("reference_fleet_revenue_per_h", "whole fleet, all on {ref}", "k--"),
    )
    for p, points in doc["adoption"].items():
        xs = [pt["adoption"] for pt in points]
        for key, label, style in styles:
            mean = [pt[key]["mean"] for pt in points]
            lo = [pt[key]["ci95"][0] for pt in points]
            hi = [pt[key]["ci95"][1] for pt in points]
            err = [
                [m - (lo_ if lo_ is not None else m) for m, lo_ in zip(mean, lo, strict=True)],
                [(hi_ if hi_ is not None else m) - m for m, hi_ in zip(mean, hi, strict=True)],
            ]
            ax.errorbar(xs, mean, yerr=err, fmt=style, capsize=3, label=label.format(p=p, ref=ref))
    pas = doc.get("passengers", {})
    where = ", ".join(pas.get("days") or []) or "synthetic passengers"
    fleet = doc.get("fleet", {})
    ax.set_xlabel("adoption (share of the fleet on the policy)")
    ax.set_ylabel("revenue per cab-hour (95% CI)")
    ax.set_xticks(sorted({pt["adoption"] for pts in doc["adoption"].values() for pt in pts}))
    ax.set_xlim(0.0, 1.05)
    ax.set_title(
        f"{fleet.get('taxis')} cabs, matching {doc.get('config', {}).get('matching')}; {where}",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    path = Path(out)
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_revenue(doc: Mapping[str, Any], out: str | Path) -> Path:
    """Revenue per hour of each policy with its 95 % interval (the simulation table's
    ``policies``), and, beside each, the paired difference to the reference with its interval
    (the gate's test), from the same runs. Written atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tiles.fileio import atomic_write_bytes

    policies = list(doc["policies"])
    rev = [doc["policies"][p]["revenue_per_h"] for p in policies]
    means = [r["mean"] for r in rev]
    lo = [
        m - (r["ci95"][0] if r["ci95"][0] is not None else m)
        for m, r in zip(means, rev, strict=True)
    ]
    hi = [
        (r["ci95"][1] if r["ci95"][1] is not None else m) - m
        for m, r in zip(means, rev, strict=True)
    ]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    ax.bar(policies, means, yerr=[lo, hi], capsize=5, color="#1e88e5")
    ax.set_ylabel("revenue per cab-hour (95% CI)")
    ax.set_title("Revenue per hour by policy", fontsize=11)
    ax.tick_params(axis="x", labelrotation=20)
    paired = doc.get("paired") or {}
    names = [p for p in policies if p in paired]
    if names:
        d = [paired[p]["revenue_per_h_diff"] for p in names]
        dm = [x["mean"] for x in d]
        dl = [m - x["ci95"][0] for m, x in zip(dm, d, strict=True)]
        dh = [x["ci95"][1] - m for m, x in zip(dm, d, strict=True)]
        colours = ["#2e7d32" if x["ci95"][0] > 0 else "#c62828" for x in d]
        bx.barh(names, dm, xerr=[dl, dh], capsize=5, color=colours)
        bx.axvline(0.0, color="black", linewidth=0.8)
        ref = doc.get("reference", "hotspot")
        bx.set_xlabel(f"paired difference to {ref}, per cab-hour (95% CI)", fontsize=9)
        bx.set_title("Gate: green if the interval is above 0", fontsize=11)
    else:
        bx.axis("off")
    pas = doc.get("passengers") or {}
    where = ", ".join(pas.get("days") or []) or "synthetic passengers"
    fleet = doc.get("fleet") or {}
    fig.suptitle(
        f"{fleet.get('taxis', doc.get('config', {}).get('taxis'))} cabs, matching "
        f"{doc.get('config', {}).get('matching', 'hail')}; passengers: {where}",
        fontsize=10,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    path = Path(out)
    atomic_write_bytes(path, buf.getvalue())
    return path
