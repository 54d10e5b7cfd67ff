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
    p = sub.add_parser("simulate", help="simulate cruising policies on real demand")
    _add_inputs(p)
    _add_fleet(p)
    _add_passengers(p)
    _add_adoption_and_plots(p)
    _add_runs(p)
    _add_outputs(p)
    p.set_defaults(func=cmd_simulate)


def _add_inputs(p: argparse.ArgumentParser) -> None:
    """The road tiles and demand, and the policies to compare."""
    p.add_argument("--tiles", required=True, help="tile database or its directory")
    p.add_argument("--demand", required=True, help="demand directory (DemandTable)")
    p.add_argument(
        "--model",
        metavar="DIR",
        help="a recent-demand cell model (a demand train --train-days output directory): "
        "nagashi-live, nagashi-offline, nagashi-agent and nagashi-agent-offline also run as "
        "their +model twins (nagashi-live+model, ...), planning with the model's factors on "
        "the table's rates and the recent inputs the live layer gives (needs --passengers; "
        "a model trained on a replayed day is refused unless --allow-in-sample)",
    )
    p.add_argument(
        "--policy",
        default="all",
        help="random (= random-walk), random-destination, hotspot, greedy, nagashi "
        "(nagashi-lone: without the supply map; nagashi-route: the agent as shipped, alone and "
        "following its route read-out; nagashi-live: as shipped with the fleet's live layer "
        "and the supply prior; nagashi-offline: the reference fleet's supply prior only, "
        "every cab offline; "
        "nagashi-offline-own: offline with the prior of a fleet on nagashi-live; "
        "nagashi-live-tick: nagashi-live reading its route again at every junction; "
        "nagashi-live-hail: nagashi-live planning with the street-hail values whatever "
        "--matching says (under dispatch the others plan with the dispatch values); "
        "nagashi-agent: every cab runs the agent's own tick, GPS fix to instruction, and "
        "drives it; nagashi-agent-offline: the same, every cab offline; "
        "nagashi-live+model, nagashi-offline+model, nagashi-agent+model, "
        "nagashi-agent-offline+model: nagashi-live, nagashi-offline, nagashi-agent, "
        "nagashi-agent-offline planning with the --model demand model), a "
        "comma-separated list, or all (random, "
        "hotspot, greedy, nagashi; under --matching dispatch COMSET's baselines "
        "random-walk and random-destination instead of random)",
    )


def _add_fleet(p: argparse.ArgumentParser) -> None:
    """The fleet and its shift."""
    p.add_argument(
        "--taxis",
        default="30",
        help="cabs in the simulated fleet, or auto (with --passengers): the size at which the "
        "reference fleet, all on hotspot, is occupied 40-50%% of its time on the first day",
    )
    p.add_argument(
        "--test-taxis",
        type=int,
        default=5,
        help="cabs driving the policy under test; the others drive the reference (hotspot)",
    )
    p.add_argument("--hours", type=float, default=4.0, help="shift length")
    p.add_argument(
        "--start",
        default="2015-06-02T08:00",
        metavar="ISO",
        help="shift start, local time (with --passengers only its time of day is used: each "
        "replayed day's shift starts then)",
    )


def _add_passengers(p: argparse.ArgumentParser) -> None:
    """Recorded passengers to replay, and how they are matched with cabs."""
    p.add_argument(
        "--passengers",
        nargs="+",
        metavar="FILE",
        help="replay these trip records as the passengers (TLC yellow CSVs, the Uber 2014 "
        "pickups): each record appears at its time on the link its pickup snaps to; what a "
        "record lacks (Uber: drop-off, trip time, fare) is drawn per seed from the demand "
        "table's yellow-cab distributions of the pickup's link and cell",
    )
    p.add_argument(
        "--days",
        metavar="D1..D2,D3",
        help="the days to replay (with --passengers), e.g. 2014-04-21..2014-04-27",
    )
    p.add_argument(
        "--allow-in-sample",
        action="store_true",
        help="replay days the demand table was built from (refused otherwise: leakage)",
    )
    p.add_argument(
        "--matching",
        choices=("hail", "dispatch"),
        default="hail",
        help="hail: the first vacant cab to pass the passenger's link within her patience; "
        "dispatch: the nearest vacant cab that can reach her within --max-wait-s (COMSET)",
    )
    p.add_argument(
        "--max-wait-s", type=float, default=600.0, help="dispatch: longest wait (COMSET: 600)"
    )


def _add_adoption_and_plots(p: argparse.ArgumentParser) -> None:
    """Adoption levels and the plots of the results."""
    p.add_argument(
        "--adoption",
        metavar="A1,A2",
        help="shares of the fleet on the policy under test, the rest on hotspot, e.g. "
        "0.05,0.25,0.5,1.0 (the largest is the main table)",
    )
    p.add_argument("--adoption-plot", metavar="PNG", help="plot revenue/h against adoption")
    p.add_argument(
        "--revenue-plot",
        metavar="PNG",
        help="plot revenue/h per policy with 95%% intervals and the paired differences",
    )


def _add_runs(p: argparse.ArgumentParser) -> None:
    """Where the runs run, their seeds, and what the simulated cabs plan with."""
    p.add_argument(
        "--jobs", type=int, default=1, help="worker processes for the runs (same results)"
    )
    p.add_argument(
        "--dask",
        metavar="tcp://HOST:PORT",
        help="run the runs on the Dask cluster of this scheduler instead (the sim extra; "
        "its workers need nagashi installed; same results)",
    )
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--seeds", type=int, default=30, help="number of seeds (CIs need >= 2)")
    p.add_argument("--replan-s", type=float, default=60.0, help="nagashi replanning interval")
    p.add_argument(
        "--patience-s",
        type=float,
        default=None,
        help="mean passenger patience, s (the world's and the planner's; default: the planner's)",
    )
    p.add_argument(
        "--live-loss",
        type=float,
        default=0.0,
        metavar="P",
        help="the live layer (nagashi-live and the other live policies) loses each heartbeat "
        "and each cab's snapshot fetch with probability P (seeded per run; default 0: nothing "
        "lost); the JSON's live_faults counts what was lost",
    )
    p.add_argument(
        "--live-outage",
        metavar="START..END",
        help="the fleet server is down from START to END minutes after the shift start: no "
        "heartbeat taken, no snapshot built; cabs keep theirs until it expires (180 s + 60 s "
        "clock skew, as the agent), then plan offline",
    )
    p.add_argument(
        "--params",
        metavar="YAML",
        help="a bundle's params.yaml: its planner section is what the simulated cabs run "
        "(as the pipeline's simulate step does); default: the planner's defaults",
    )


def _add_outputs(p: argparse.ArgumentParser) -> None:
    """The output (JSON or the table), the release gate, one shift's routes."""
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--gate",
        action="store_true",
        help="exit 1 unless the 95%% interval of the gated policy's paired revenue/h difference "
        "against hotspot (same passengers, starting positions, seeds) lies above zero, at every "
        "adoption level run",
    )
    p.add_argument(
        "--gate-policy",
        default="nagashi-live",
        help="the policy --gate judges (default nagashi-live: the agent as shipped with the "
        "fleet's live layer; nagashi: the idealised whole-area policy)",
    )
    p.add_argument("--plot", metavar="PNG", help="plot one shift's routes (first seed)")


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
