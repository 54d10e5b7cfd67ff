"""Runs are independent tasks (a day, a seed: every policy and every adoption level on the same
passengers and starting positions), seeded by their own numbers only, so ``jobs`` worker
processes, or the workers of a Dask cluster (``dask``: its scheduler's address, the ``sim``
extra), give exactly the results of one."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tools.errors import ToolsError
from tools.sim.engine import run_shift
from tools.sim.replay import Replay, replay_passengers
from tools.sim.result import RunResult
from tools.sim.world import Passengers, World, make_passengers

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["DASK_CONNECT_TIMEOUT_S", "check_dask_address", "dask_client", "run_seeds"]

#: how long to try to reach a Dask scheduler before giving up (one line, exit 2)
DASK_CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class _Tasks:
    """What every run task needs (set before the worker processes fork; sent to Dask)."""

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
    client: Client | None = None,
) -> list[list[list[RunResult]]]:
    """Every task's runs, in task order: on the Dask ``client``'s cluster if given, else in
    ``jobs`` processes (one: here)."""
    global _TASKS
    n = len(spec.tasks)
    if client is not None:
        return _run_on_dask(client, spec, progress)
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


def _run_on_dask(
    client: Client, spec: _Tasks, progress: Callable[[str], None] | None
) -> list[list[list[RunResult]]]:
    """The tasks on the cluster: ``spec`` (the worlds) sent once to every worker, one future
    per task, the results gathered in task order."""
    from distributed import as_completed

    shared = client.scatter(spec, broadcast=True)
    futures = [client.submit(_run_task_of, shared, i) for i in range(len(spec.tasks))]
    if progress is not None:
        for k, _ in enumerate(as_completed(futures), 1):
            progress(f"run {k}/{len(futures)} done (dask)")
    out: list[list[list[RunResult]]] = client.gather(futures)
    return out


def check_dask_address(address: str) -> None:
    """Refuse (:class:`ToolsError`) an address that is not ``tcp://HOST:PORT`` (or ``tls://``),
    or a missing ``sim`` extra, before anything is loaded."""
    try:
        from distributed.comm.addressing import parse_address, parse_host_port
    except ImportError:
        raise ToolsError(
            "a Dask scheduler needs the sim extra (pip install 'nagashi[sim]')"
        ) from None
    try:
        scheme, loc = parse_address(address)
        parse_host_port(loc)
        if scheme not in ("tcp", "tls"):
            raise ValueError(f"scheme {scheme!r}")
    except ValueError as e:
        raise ToolsError(f"dask scheduler {address!r}: not tcp://HOST:PORT ({e})") from None


@contextlib.contextmanager
def dask_client(address: str | None) -> Iterator[Client | None]:
    """A client of the Dask scheduler at ``address`` (``tcp://HOST:PORT``), closed on exit;
    None without an address. A malformed or unreachable address is a :class:`ToolsError`
    (after ``DASK_CONNECT_TIMEOUT_S``); so is a missing ``sim`` extra."""
    if address is None:
        yield None
        return
    check_dask_address(address)
    from distributed import Client

    try:
        client = Client(address, timeout=DASK_CONNECT_TIMEOUT_S, set_as_default=False)
    except OSError as e:
        raise ToolsError(f"dask scheduler {address}: unreachable ({e})") from None
    with client:
        yield client


def run_seeds(
    world: World,
    policies: Sequence[str],
    seeds: Sequence[int],
    multiplier: float,
    progress: Callable[[str], None] | None = None,
    jobs: int = 1,
    dask: str | None = None,
) -> dict[str, list[RunResult]]:
    """Every policy on the same seeds (same passengers and starting positions), synthetic; in
    ``jobs`` processes or on the Dask scheduler at ``dask`` (same results)."""
    spec = _Tasks(
        (world,),
        None,
        tuple(policies),
        (world.config.test_taxis,),
        multiplier,
        tuple((0, s) for s in seeds),
    )
    with dask_client(dask) as client:
        runs = _run_tasks(spec, jobs, progress, client)
    return {p: [r[0][k] for r in runs] for k, p in enumerate(policies)}
