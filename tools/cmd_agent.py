"""``nagashi agent run``: the in-cab agent (GPS -> plan -> safety -> tablet page, trip log)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from tools.errors import ToolsError
from tools.server_options import CA_FILE_HELP, check_ca_file, check_server_url

if TYPE_CHECKING:
    from agent.runtime import Agent, RunSummary

DEFAULT_GPS = "tcp://127.0.0.1:10110"  # the usual NMEA-over-TCP port of GPS bridges


def add_runtime_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", default="127.0.0.1:8765", help="HOST:PORT of the local API and page")
    p.add_argument("--no-api", action="store_true", help="do not serve the API and page")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed (traces); 0: no pauses")
    p.add_argument(
        "--data-dir", default=None, help="trip logs and outbox (default ~/.local/state/nagashi)"
    )
    p.add_argument("--vehicle", default=os.environ.get("NAGASHI_VEHICLE", "dev"))
    p.add_argument("--locale", choices=["en", "ja"], default="en")
    p.add_argument("--timezone", default=None, help="only if the bundle names none")
    p.add_argument("--plan-interval", type=float, default=5.0, help="seconds between plans")
    p.add_argument("--quiet", action="store_true", help="do not print instructions")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = sub.add_parser("agent", help="the in-cab agent")
    asub = agent.add_subparsers(dest="agent_command", metavar="ACTION")
    asub.required = True
    run = asub.add_parser("run", help="run the agent: GPS in, instructions out, trips logged")
    run.add_argument("--bundle-dir", required=True, help="a bundle, or a sync bundle store")
    run.add_argument(
        "--gps",
        default=DEFAULT_GPS,
        help="trace.csv | trace.gpx | log.nmea | tcp://HOST:PORT (NMEA) | gpsd://HOST[:PORT]",
    )
    add_runtime_arguments(run)
    run.add_argument("--sync-server", default=None, help="fleet server URL (logs, bundles)")
    run.add_argument("--token-file", default=None, help="vehicle token (or NAGASHI_TOKEN)")
    run.add_argument("--area", default=None, help="area to pull bundles for")
    run.add_argument("--trusted-root", default=None, help="the fleet's TUF root.json")
    run.add_argument("--ca-file", default=None, help=CA_FILE_HELP)
    run.add_argument(
        "--cohort", default=None, help="staged rollouts: this cab's cohort (e.g. trial-cabs)"
    )
    run.set_defaults(func=cmd_agent_run)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "nagashi"


def _token(args: argparse.Namespace) -> str:
    if args.token_file:
        try:
            return Path(args.token_file).read_text().strip()
        except OSError as e:
            raise ToolsError(f"cannot read --token-file: {e}") from e
    token = os.environ.get("NAGASHI_TOKEN", "")
    if not token:
        raise ToolsError("--sync-server needs --token-file or NAGASHI_TOKEN")
    return token


def run_agent(args: argparse.Namespace, bundle_dir: Path, gps: str) -> int:
    """Shared by ``agent run`` and ``demo``: build, serve, run until the source ends or SIGTERM.

    The API's socket listens before the bundle loads; its thread imports the web stack and
    serves while the bundle loads and the first tick runs (the page says "starting" until then).
    The garbage collector is held until the first instruction (:func:`_hold_gc`).
    """
    release_gc = _hold_gc()
    from agent.api.server import ApiServer, parse_listen
    from agent.api.state import AgentState
    from agent.clock import SystemClock
    from agent.gps import open_source
    from agent.instruction import Instruction, format_line
    from agent.runtime import Agent, AgentConfig, SyncSettings, start_bundle

    sync = None
    if getattr(args, "sync_server", None):
        sync = SyncSettings(
            server_url=check_server_url(args.sync_server, "--sync-server"),
            token=_token(args),
            area=args.area,
            trusted_root=Path(args.trusted_root) if args.trusted_root else None,
            ca_file=check_ca_file(args),
            cohort=args.cohort,
        )
    config = AgentConfig(
        bundle_dir=bundle_dir,
        data_dir=Path(args.data_dir) if args.data_dir else default_data_dir(),
        vehicle_id=args.vehicle,
        locale=args.locale,
        timezone=args.timezone,
        plan_interval_s=args.plan_interval,
        sync=sync,
    )
    state = AgentState(locale=args.locale)
    server = None if args.no_api else ApiServer(state, parse_listen(args.api)).start()
    try:
        # fail fast on a bad bundle: every file is checked against its manifest hash (a damaged
        # active bundle in a store: the previous good one, or the active one pulled again)
        bundle = start_bundle(config)
        clock = SystemClock()
        source = open_source(gps, clock, speed=args.speed)
        last: list[str] = [""]

        def show(ins: Instruction) -> None:
            release_gc()
            key = f"{ins.kind}|{ins.maneuver.text if ins.maneuver else ''}|{ins.message}"
            if key != last[0] and not args.quiet:
                print(format_line(ins), flush=True)
            last[0] = key

        agent = Agent(config, source, clock, state, on_instruction=show, bundle=bundle)
        if server is not None:
            print(f"tablet page: {server.url}/   (API: {server.url}/openapi.json)", file=sys.stderr)
        print(
            f"bundle {agent.bundle.bundle_id[:12]} ({agent.bundle.manifest.get('area')}), "
            f"GPS {source.description}, logs in {agent.triplog.config.directory}",
            file=sys.stderr,
        )
        summary = _run_until_signal(agent)
    finally:
        release_gc()
        if server is not None:
            server.stop()
    if args.json:
        print(json.dumps(summary.to_json(), indent=2, sort_keys=True))
    else:
        print(
            f"{summary.ticks} ticks over {summary.fixes} fixes: "
            + ", ".join(f"{k} {v}" for k, v in sorted(summary.by_kind.items()))
            + f"; outbox holds {summary.outbox_remaining} record(s)",
            file=sys.stderr,
        )
    return 0


#: the collector is released this long after start at the latest (a receiver that never
#: gives a fix publishes no instruction)
GC_HOLD_MAX_S = 10.0


def _hold_gc() -> Callable[[], None]:
    """Turn Python's cyclic garbage collector off for the start-up (the imports, the bundle
    load and the first tick allocate hundreds of thousands of objects that live for the whole
    run, and the collector traverses them again and again: 50-odd collections before the first
    tick), and give back the function that turns it on again, freezing what start-up built into
    the permanent generation so that later collections skip it. Called by the first
    instruction, at the end of the run, or after :data:`GC_HOLD_MAX_S`, whichever comes first;
    a no-op when the collector was off already."""
    import gc
    import threading

    if not gc.isenabled():
        return lambda: None
    gc.disable()
    lock = threading.Lock()
    done = [False]

    def release() -> None:
        with lock:
            if done[0]:
                return
            done[0] = True
        gc.freeze()
        gc.enable()

    timer = threading.Timer(GC_HOLD_MAX_S, release)
    timer.daemon = True
    timer.start()
    return release


def _run_until_signal(agent: Agent) -> RunSummary:
    """``agent.run()``, ended early by SIGTERM or SIGINT (the handlers are restored after)."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        agent.stop()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return agent.run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def cmd_agent_run(args: argparse.Namespace) -> int:
    return run_agent(args, Path(args.bundle_dir), args.gps)
