"""``nagashi simulate``: the demand/supply simulator comparing cruising policies.

Passengers are synthetic (Poisson at the demand table's rates: in-sample) unless
``--passengers FILE... --days D`` replays recorded trips of held-out days
(:mod:`tools.sim.replay`); a day the demand table was built from is refused (exit 2) unless
``--allow-in-sample``. The runs go to ``--jobs N`` worker processes, or to the workers of a Dask
cluster (``--dask tcp://HOST:PORT``, the ``sim`` extra): the same results either way."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.errors import ToolsError

if TYPE_CHECKING:
    from models import DemandTable
    from tiles import Graph
    from tools.sim.experiment import Experiment
    from tools.sim.replay import Replay
    from tools.sim.world import SimConfig

POLICY_CHOICES = (
    "random",
    "random-walk",
    "random-destination",
    "hotspot",
    "greedy",
    "nagashi",
    "nagashi-lone",
    "nagashi-route",
    "nagashi-live",
    "nagashi-offline",
    "nagashi-offline-own",
    "nagashi-offline-spread",  # also nagashi-offline-spread@EPS: its margin (tools.sim.nagashi)
    "nagashi-live-tick",
    "nagashi-live-hail",
    "nagashi-agent",
    "nagashi-agent-offline",
    "nagashi-live+model",
    "nagashi-offline+model",
    "nagashi-agent+model",
    "nagashi-agent-offline+model",
    "all",
)
#: the policies that plan with ``--model``, and the statistics policy each is the twin of
MODEL_TWINS = {
    "nagashi-live": "nagashi-live+model",
    "nagashi-offline": "nagashi-offline+model",
    "nagashi-agent": "nagashi-agent+model",
    "nagashi-agent-offline": "nagashi-agent-offline+model",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from tools._simulate_args import (
        add_adoption_and_plots,
        add_fleet,
        add_inputs,
        add_outputs,
        add_passengers,
        add_runs,
    )

    p = sub.add_parser("simulate", help="simulate cruising policies on real demand")
    add_inputs(p)
    add_fleet(p)
    add_passengers(p)
    add_adoption_and_plots(p)
    add_runs(p)
    add_outputs(p)
    p.set_defaults(func=cmd_simulate)


def _policies(
    text: str, gate: bool, matching: str = "hail", gate_policy: str = "nagashi-live"
) -> list[str]:
    four = ["random", "hotspot", "greedy", "nagashi"]
    if matching == "dispatch":
        four = ["random-walk", "random-destination", "hotspot", "greedy", "nagashi"]
    from tools.sim.policies import spread_eps_of

    names = four if text == "all" else text.split(",")
    for n in names:
        try:
            if spread_eps_of(n) is not None:
                continue  # nagashi-offline-spread@EPS
        except ValueError as exc:
            raise ToolsError(str(exc)) from None
        if n not in POLICY_CHOICES or n == "all":
            raise ToolsError(f"unknown policy {n!r} (choose from {', '.join(POLICY_CHOICES)})")
    if gate:
        if gate_policy not in POLICY_CHOICES or gate_policy in ("all", "hotspot"):
            raise ToolsError(f"--gate-policy {gate_policy!r} is not a policy to gate")
        for needed in ("hotspot", gate_policy):
            if needed not in names:
                names.append(needed)
    return names


def _with_model_twins(names: list[str], model: str | None) -> list[str]:
    """With ``--model``: ``names`` with the ``+model`` twin of each statistics policy that has
    one (after it); without it a ``+model`` policy is refused."""
    if model is None:
        for n in names:
            if n.endswith("+model"):
                raise ToolsError(f"--policy {n} needs --model DIR")
        return names
    out: list[str] = []
    for n in names:
        if n not in out:
            out.append(n)
        twin = MODEL_TWINS.get(n)
        if twin is not None and twin not in names and twin not in out:
            out.append(twin)
    if not any(n.endswith("+model") for n in out):
        raise ToolsError(
            "--model: no policy plans with it (name nagashi-live, nagashi-offline, "
            "nagashi-agent or nagashi-agent-offline, or their +model variants, in --policy)"
        )
    return out


def _planner_section(path: str) -> dict[str, Any]:
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ToolsError(f"--params {path}: unreadable ({type(e).__name__})") from None
    if not isinstance(doc, dict):
        raise ToolsError(f"--params {path}: not a mapping")
    planner = doc.get("planner") or {}
    if not isinstance(planner, dict):
        raise ToolsError(f"--params {path}: planner must be a mapping")
    from agent.planner import PlannerParams

    try:
        PlannerParams.from_mapping(planner, where=f"--params {path}")  # checked before the run
    except ValueError as e:
        raise ToolsError(str(e)) from None
    return dict(planner)


def _progress(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


def _replay_days(args: argparse.Namespace) -> frozenset[dt.date] | None:
    from models.trips import parse_days

    if args.passengers is None:
        if args.days is not None or args.allow_in_sample:
            raise ToolsError("--days and --allow-in-sample go with --passengers")
        return None
    if args.days is None:
        raise ToolsError("--passengers needs --days (the held-out days to replay)")
    for f in args.passengers:
        if not Path(f).is_file():
            raise ToolsError(f"--passengers {f}: no such file")
    return parse_days(args.days)  # a bad value is a DemandDataError: one line, exit 2


def _adoption(text: str | None) -> list[float]:
    if text is None:
        return []
    try:
        shares = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ToolsError(f"--adoption {text!r}: expected shares like 0.05,0.25,0.5,1.0") from None
    if not shares or any(not 0 < a <= 1 for a in shares):
        raise ToolsError(f"--adoption {text!r}: each share must be in (0, 1]")
    return sorted(set(shares))


def cmd_simulate(args: argparse.Namespace) -> int:
    from models import DemandTable
    from tools._simulate_table import print_table
    from tools.sim.experiment import gate, json_finite, run_experiment

    policies = _with_model_twins(
        _policies(args.policy, args.gate, args.matching, args.gate_policy), args.model
    )
    if args.seeds < 1:
        raise ToolsError("--seeds must be at least 1")
    if args.jobs < 1:
        raise ToolsError("--jobs must be at least 1")
    if args.dask is not None:
        from tools.sim.runs import check_dask_address

        if args.jobs > 1:
            raise ToolsError("--jobs and --dask: the runs go to one or the other")
        check_dask_address(args.dask)
    days = _replay_days(args)
    taxis_auto = args.taxis == "auto"
    if taxis_auto and days is None:
        raise ToolsError("--taxis auto needs --passengers (synthetic passengers follow the fleet)")
    try:
        taxis = 30 if taxis_auto else int(args.taxis)
    except ValueError:
        raise ToolsError(f"--taxis {args.taxis!r}: a number of cabs or auto") from None
    adoption = _adoption(args.adoption)
    if args.adoption_plot and not adoption:
        raise ToolsError("--adoption-plot needs --adoption")
    start, config = _config(args, days, taxis)
    table = DemandTable.load(args.demand)
    if days is not None:
        _refuse_leakage(table, days, args.allow_in_sample)
    model = None
    if args.model is not None:
        from tools.sim.sim_model import load_sim_model

        model = load_sim_model(args.model, table, days, args.allow_in_sample)
    planner = _planner_section(args.params) if args.params else {}
    t0 = time.monotonic()
    seeds = list(range(args.seed, args.seed + args.seeds))
    progress = None if args.json else _progress
    graph = _graph(args.tiles, table)
    replay = None
    if days is not None:
        replay = _replay(args, graph, table, days, start, progress)
        if model is not None:
            model = model.with_replay(replay)
    exp = run_experiment(
        graph,
        table,
        config,
        policies,
        seeds,
        planner,
        progress,
        replay=replay,
        taxis_auto=taxis_auto,
        adoption=adoption,
        jobs=args.jobs,
        dask=args.dask,
        model=model,
    )
    doc: dict[str, Any] = exp.to_json(table.version)
    doc["config"]["start"] = start.isoformat() if replay is None else f"{start:%H:%M}"
    doc["elapsed_s"] = round(time.monotonic() - t0, 1)
    ok, verdict = gate(json_finite(doc), args.gate_policy) if args.gate else (True, "")
    if args.gate:
        doc["gate"] = {"pass": ok, "verdict": verdict, "rule": doc["gate_rule"]}
    _plots(args, doc, exp, policies, seeds)
    if args.json:
        print(json.dumps(json_finite(doc), indent=2, sort_keys=True))
    else:
        print_table(json_finite(doc))
        if args.gate:
            print(verdict)
    return 0 if ok else 1


def _config(
    args: argparse.Namespace, days: frozenset[dt.date] | None, taxis: int
) -> tuple[dt.datetime, SimConfig]:
    """The shift's start and the simulator's configuration from the options."""
    from agent.planner import minute_of_week_of
    from tools.sim.world import SimConfig

    try:
        start = dt.datetime.fromisoformat(args.start)
        start_minute = minute_of_week_of(start)
        if days is not None and start.hour * 60 + start.minute + args.hours * 60 > 1440:
            raise ValueError("with --passengers the shift must end by midnight of its day")
        config = SimConfig(
            taxis=taxis,
            test_taxis=min(args.test_taxis, taxis),
            hours=args.hours,
            start_minute_of_week=start_minute,
            replan_s=args.replan_s,
            matching=args.matching,
            max_wait_s=args.max_wait_s,
            live_loss=args.live_loss,
            live_outage_min=_outage(args.live_outage),
            **({} if args.patience_s is None else {"patience_s": args.patience_s}),
        )
    except ValueError as e:
        raise ToolsError(str(e)) from None
    return start, config


def _outage(text: str | None) -> tuple[float, float] | None:
    """``--live-outage START..END`` (minutes after the shift start)."""
    if text is None:
        return None
    a, sep, b = text.partition("..")
    try:
        if not sep:
            raise ValueError
        start, end = float(a), float(b)
    except ValueError:
        raise ToolsError(
            f"--live-outage {text!r}: expected START..END minutes, e.g. 60..120"
        ) from None
    if not 0.0 <= start < end:
        raise ToolsError(f"--live-outage {text!r}: need 0 <= START < END")
    return start, end


def _refuse_leakage(table: DemandTable, days: frozenset[dt.date], allow: bool) -> None:
    """Refuse to replay a day the demand table was built from (or cannot tell) unless
    ``--allow-in-sample``."""
    from tools.sim.replay import describe_days, in_sample_days

    leaked = in_sample_days(table, days)
    if leaked is None and not allow:
        raise ToolsError(
            "the demand table does not record the days it was built from, so the replay "
            "cannot be checked for leakage (rebuild it, or pass --allow-in-sample)"
        )
    if leaked and not allow:
        raise ToolsError(
            f"refusing to replay {describe_days(leaked)}: the demand table was built from "
            f"those days (pass --allow-in-sample to replay them anyway)"
        )


def _graph(tiles: str, table: DemandTable) -> Graph:
    """The whole road graph of ``tiles``, which must be the network the demand was built for."""
    from tiles import TileStore

    with TileStore(tiles) as store:
        if table.network_sha256 != store.meta.get("source_sha256"):
            raise ToolsError("the demand table was built for another road network")
        return store.all()


def _replay(
    args: argparse.Namespace,
    graph: Graph,
    table: DemandTable,
    days: frozenset[dt.date],
    start: dt.datetime,
    progress: Callable[[str], None] | None,
) -> Replay:
    """The recorded passengers of ``days`` in the shift's window (none is a user error)."""
    from tools.sim.replay import describe_days, load_replay

    if progress is not None:
        progress("reading and snapping the recorded passengers ...")
    replay = load_replay(
        graph, table, list(args.passengers), days, start.hour * 60 + start.minute, args.hours
    )
    if replay.records == 0:
        raise ToolsError(
            f"no record of {', '.join(args.passengers)} has a pickup in the area on "
            f"{describe_days(days)} between {start:%H:%M} and the shift's end"
        )
    return replay


def _plots(
    args: argparse.Namespace,
    doc: dict[str, Any],
    exp: Experiment,
    policies: list[str],
    seeds: list[int],
) -> None:
    """The plots asked for (one shift's routes, adoption, revenue), their paths into ``doc``."""
    from tools.sim.engine import run_shift
    from tools.sim.experiment import json_finite
    from tools.sim.plot import plot_adoption, plot_revenue, plot_routes
    from tools.sim.replay import replay_passengers
    from tools.sim.world import make_passengers

    world, cal, replay = exp.world, exp.calibration, exp.replay
    if args.plot:
        pax = (
            make_passengers(world, seeds[0], cal.multiplier)
            if replay is None
            else replay_passengers(world, replay.days[0], seeds[0])
        )
        runs = [run_shift(world, pax, p, seeds[0], cal.multiplier, record=True) for p in policies]
        doc["plot"] = str(plot_routes(world, runs, args.plot))
    if args.adoption_plot:
        doc["adoption_plot"] = str(plot_adoption(json_finite(doc), args.adoption_plot))
    if args.revenue_plot:
        doc["revenue_plot"] = str(plot_revenue(json_finite(doc), args.revenue_plot))
