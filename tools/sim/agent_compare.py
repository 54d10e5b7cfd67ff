"""``nagashi-agent`` against ``nagashi-live`` and hotspot (issue 16: "measure and state the
difference"): the experiment of ``nagashi simulate`` (:func:`tools.sim.experiment.run_experiment`,
the same runs, passengers and paired intervals), plus what only the agent's own tick shows:
the share of its ticks that fell back and why, the share of its first moves equal to
``nagashi-live``'s read-out, and the CPU cost per cab-hour of every policy (the shift's
``process_time`` in the process that ran it; for ``nagashi-agent`` without the
``nagashi-live`` read-out it runs beside each tick only to count equal first moves).
``nagashi-agent+model`` (``bench simagent --model DIR``) is counted the same way against
``nagashi-live+model``'s read-out (:data:`PEERS`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tools.sim.engine import RunResult
from tools.sim.experiment import json_finite, mean_ci, paired_gain, run_experiment
from tools.sim.replay import Replay
from tools.sim.world import SimConfig

if TYPE_CHECKING:
    from models import DemandTable
    from tiles import Graph
    from tools.sim.sim_model import SimModel

AGENT = "nagashi-agent"
POLICIES = ("hotspot", "nagashi-live", AGENT)
#: the agent's policies and the nagashi-live variant each one's first moves are compared with
#: (its own read-out: ``nagashi-agent+model`` against ``nagashi-live+model``)
PEERS = {AGENT: "nagashi-live", f"{AGENT}+model": "nagashi-live+model"}


def _ci(values: Sequence[float], digits: int = 4) -> dict[str, Any]:
    mean, lo, hi = mean_ci(values)

    def r(x: float) -> float | None:
        return round(x, digits) if math.isfinite(x) else None

    return {"mean": r(mean), "ci95": [r(lo), r(hi)]}


def agent_figures(results: Mapping[str, Sequence[RunResult]], hours: float) -> dict[str, Any]:
    """The agent's tick counts over the runs of shifts of ``hours`` (``results``: per policy,
    as :attr:`Experiment.results`; every policy of :data:`PEERS` that ran), and every
    policy's CPU cost."""
    out: dict[str, Any] = {"cpu_s_per_cab_h": {}}
    for policy, runs in results.items():
        per = []
        for r in runs:
            cpu = r.cpu_s - float(r.policy_stats.get("compare_cpu_s", 0.0))
            per.append(cpu / (r.test_taxis * hours))
        out["cpu_s_per_cab_h"][policy] = _ci(per)
    for agent, peer in PEERS.items():
        if results.get(agent):
            out[agent] = _tick_figures(results, agent, peer, hours)
    return out


def _tick_figures(
    results: Mapping[str, Sequence[RunResult]], agent: str, peer: str, hours: float
) -> dict[str, Any]:
    """:func:`agent_figures` of one agent policy, ``peer`` the one it is paired with."""
    runs = results[agent]
    reasons: Counter[str] = Counter()
    triggers: Counter[str] = Counter()
    for r in runs:
        reasons.update(r.policy_stats.get("fallback_reasons", {}))
        triggers.update(r.policy_stats.get("ticks_by_trigger", {}))
    ticks = sum(int(r.policy_stats["ticks"]) for r in runs)
    fallbacks = sum(int(r.policy_stats["fallback_ticks"]) for r in runs)
    compared = sum(int(r.policy_stats["first_moves_compared"]) for r in runs)
    equal = sum(int(r.policy_stats["first_moves_equal"]) for r in runs)
    moves = sum(int(r.policy_stats["moves"]) for r in runs)
    road = sum(int(r.policy_stats["road_moves"]) for r in runs)
    cab_h = sum(r.test_taxis * hours for r in runs)
    return {
        "ticks": ticks,
        "ticks_per_cab_h": round(ticks / cab_h, 2),
        "ticks_by_trigger": dict(sorted(triggers.items())),
        "tick_cpu_ms": round(
            1000.0 * sum(float(r.policy_stats["tick_cpu_s"]) for r in runs) / max(ticks, 1), 2
        ),
        "fallback_share": _ci([float(r.policy_stats["fallback_share"]) for r in runs]),
        "fallback_ticks": fallbacks,
        # a fallback tick may name several reasons: the share of ticks naming each
        "fallback_reasons_per_tick": {
            k: round(v / ticks, 5) for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])
        },
        "road_move_share": round(road / moves, 5) if moves else None,
        "first_move_equal_share": _ci(
            [float(r.policy_stats["first_move_equal_share"]) for r in runs]
        ),
        "first_moves_compared": compared,
        "first_moves_equal": equal,
        # (the key names the peer as it did when there was one agent policy)
        "paired_vs_nagashi_live": paired_gain({k: list(v) for k, v in results.items()}, agent, peer)
        if peer in results
        else None,
        "compared_with": peer,
        "gps_sigma_m": runs[0].policy_stats.get("gps_sigma_m"),
        "tick_s": runs[0].policy_stats.get("tick_s"),
    }


def compare_agent(
    graph: Graph,
    table: DemandTable,
    config: SimConfig,
    seeds: Sequence[int],
    *,
    replay: Replay | None,
    planner: Mapping[str, Any] | None = None,
    policies: Sequence[str] = POLICIES,
    jobs: int = 1,
    progress: Callable[[str], None] | None = None,
    model: SimModel | None = None,
) -> dict[str, Any]:
    """Run the experiment on ``policies`` and add :func:`agent_figures` (``agent``);
    ``model``: the cell demand model of the ``+model`` policies (:mod:`tools.sim.sim_model`)."""
    exp = run_experiment(
        graph,
        table,
        config,
        policies,
        seeds,
        planner,
        progress,
        replay=replay,
        jobs=jobs,
        model=model,
    )
    doc = exp.to_json(table.version)
    doc["agent"] = agent_figures(exp.results, exp.world.config.hours)
    out: dict[str, Any] = json_finite(doc)
    return out
