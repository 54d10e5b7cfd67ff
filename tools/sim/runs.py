"""Runs are independent tasks (a day, a seed: every policy and every adoption level on the same
passengers and starting positions), seeded by their own numbers only, so ``jobs`` worker
processes give exactly the results of one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tools.sim.engine import RunResult, run_shift
from tools.sim.replay import Replay, replay_passengers
from tools.sim.world import Passengers, World, make_passengers

__all__ = ["run_seeds"]


@dataclass(frozen=True)
class _Tasks:
    """What every run task needs (set before the worker processes fork)."""

    worlds: tuple[World, ...]  # per replayed day (one world when synthetic)
    replay: Replay | None
    policies: tuple[str, ...]
    levels: tuple[int, ...]  # test cabs per adoption level
    multiplier: float
    tasks: tuple[tuple[int, int], ...]  # (day index, seed)


_TASKS: _Tasks | None = None


def _passengers(spec: _Tasks, day: int, seed: int) -> Passengers:
    if spec.replay is None:
        return make_passengers(spec.worlds[0], seed, spec.multiplier)
    return replay_passengers(spec.worlds[day], spec.replay.days[day], seed)


def _run_task(index: int) -> list[list[RunResult]]:
    """Task ``index`` of ``_TASKS`` (set before the worker processes fork)."""
    assert _TASKS is not None
    return _run_task_of(_TASKS, index)


def _run_task_of(spec: _Tasks, index: int) -> list[list[RunResult]]:
    """Task ``index``: per adoption level, every policy's run (in ``spec.policies`` order)."""
    day, seed = spec.tasks[index]
    world = spec.worlds[day]
    pax = _passengers(spec, day, seed)
    return [
        [run_shift(world, pax, p, seed, spec.multiplier, test_taxis=k) for p in spec.policies]
        for k in spec.levels
    ]


def _run_tasks(
    spec: _Tasks,
    jobs: int,
    progress: Callable[[str], None] | None,
) -> list[list[list[RunResult]]]:
    """Every task's runs, in task order, in ``jobs`` processes (one: here)."""
    global _TASKS
    n = len(spec.tasks)
    _TASKS = spec
    try:
        if jobs <= 1 or n <= 1:
            out = []
            for i in range(n):
                out.append(_run_task(i))
                if progress is not None:
                    progress(
                        f"run {i + 1}/{n} done (day {spec.tasks[i][0]}, seed {spec.tasks[i][1]})"
                    )
            return out
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # fork: the workers inherit ``_TASKS`` (the worlds) instead of unpickling it
        with ProcessPoolExecutor(max_workers=min(jobs, n), mp_context=mp.get_context("fork")) as ex:
            out = []
            for i, r in enumerate(ex.map(_run_task, range(n))):
                out.append(r)
                if progress is not None:
                    progress(f"run {i + 1}/{n} done")
            return out
    finally:
        _TASKS = None


def run_seeds(
    world: World,
    policies: Sequence[str],
    seeds: Sequence[int],
    multiplier: float,
    progress: Callable[[str], None] | None = None,
    jobs: int = 1,
) -> dict[str, list[RunResult]]:
    """Every policy on the same seeds (same passengers and starting positions), synthetic, in
    ``jobs`` processes (same results)."""
    spec = _Tasks(
        (world,),
        None,
        tuple(policies),
        (world.config.test_taxis,),
        multiplier,
        tuple((0, s) for s in seeds),
    )
    runs = _run_tasks(spec, jobs, progress)
    return {p: [r[0][k] for r in runs] for k, p in enumerate(policies)}
