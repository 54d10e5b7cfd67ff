"""The options of ``nagashi simulate`` (tools.cmd_simulate registers them)."""

from __future__ import annotations

import argparse


def add_inputs(p: argparse.ArgumentParser) -> None:
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


def add_fleet(p: argparse.ArgumentParser) -> None:
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


def add_passengers(p: argparse.ArgumentParser) -> None:
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


def add_adoption_and_plots(p: argparse.ArgumentParser) -> None:
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


def add_runs(p: argparse.ArgumentParser) -> None:
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


def add_outputs(p: argparse.ArgumentParser) -> None:
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
