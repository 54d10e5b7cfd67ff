"""``nagashi simulate --plot``: the shift plot's titles are readable and say their units."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from agent.planner import speed_factor_from_demand
from models import DemandTable
from tiles import TileStore
from tools.sim.experiment import run_seeds
from tools.sim.plot import draw_routes
from tools.sim.world import SimConfig, build_world


def test_shift_plot_titles_are_readable_and_say_their_units(
    manhattan_tiles: Path, manhattan_demand: Path
) -> None:
    table = DemandTable.load(manhattan_demand)
    with TileStore(manhattan_tiles) as store:
        g = store.all()
        config = SimConfig(taxis=6, test_taxis=2, hours=0.25, calibration_seeds=1)
        world = build_world(g, table, config, speed_factor_from_demand(table, g))
    runs = run_seeds(world, ["random", "nagashi"], [0], 10.0)
    fig = draw_routes(world, [runs["random"][0], runs["nagashi"][0]])
    try:
        titles = [ax.title for ax in fig.axes if ax.get_title()]
        assert len(titles) == 2
        for t in titles:
            assert t.get_fontsize() >= 12
            assert "per hour" in t.get_text() and "pickups per hour" in t.get_text()
        sup = fig._suptitle
        assert sup is not None and sup.get_fontsize() >= 12 and "hour shift" in sup.get_text()
        assert fig._supxlabel is not None and "OpenStreetMap" in fig._supxlabel.get_text()
    finally:
        plt.close(fig)
