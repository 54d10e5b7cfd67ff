"""``nagashi logs pull``: a vehicle's trip logs from the fleet server (engineer token)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import time
from pathlib import Path

from tools.errors import ToolsError
from tools.server_options import CA_FILE_HELP, check_ca_file, check_server_url

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    logs = sub.add_parser("logs", help="trip logs on the fleet server")
    lsub = logs.add_subparsers(dest="logs_command", metavar="ACTION")
    lsub.required = True
    pull = lsub.add_parser("pull", help="download a vehicle's trip logs (engineer token)")
    pull.add_argument("--server", required=True, help="fleet server URL")
    pull.add_argument("--vehicle", required=True, help="vehicle id")
    pull.add_argument(
        "--since",
        required=True,
        help="ISO 8601 time, UNIX seconds, or an age such as 6h, 2d (on the --clock)",
    )
    pull.add_argument(
        "--clock",
        choices=["gps", "received"],
        default="gps",
        help="which time --since is compared with: gps, the record's own time as the cab "
        "logged it (default; a drive replayed from an old trace carries the trace's time), or "
        "received, when the fleet server received it",
    )
    pull.add_argument("--token-file", default=None, help="engineer token (or NAGASHI_TOKEN)")
    pull.add_argument("--out", default=None, help="output file (default logs-VEHICLE.msgpack)")
    pull.add_argument("--ca-file", default=None, help=CA_FILE_HELP)
    pull.add_argument("--json", action="store_true")
    pull.set_defaults(func=cmd_logs_pull)


def parse_since(text: str, now_s: float) -> float:
    from agent.gps import parse_time

    m = _RELATIVE.match(text.strip())
    if m:
        return now_s - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return parse_time(text)
    except ValueError as e:
        raise ToolsError(f"--since: expected ISO 8601, UNIX seconds or e.g. 6h ({e})") from e


def cmd_logs_pull(args: argparse.Namespace) -> int:
    from tools.field.logs_pull import pull_logs

    check_server_url(args.server, "--server")
    ca_file = check_ca_file(args)
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as e:
            raise ToolsError(f"cannot read --token-file: {e}") from e
    else:
        token = os.environ.get("NAGASHI_TOKEN", "")
    if not token:
        raise ToolsError("an engineer token is needed: --token-file or NAGASHI_TOKEN")
    since = parse_since(args.since, time.time())
    out = Path(args.out or f"logs-{args.vehicle}.msgpack")
    doc = pull_logs(args.server, token, args.vehicle, since, out, clock=args.clock, ca_file=ca_file)
    if args.json:
        print(json.dumps(doc, sort_keys=True))
    else:
        kinds = ", ".join(f"{v} {k}" for k, v in doc["kinds"].items())
        when = dt.datetime.fromtimestamp(since, dt.UTC).isoformat(timespec="seconds")
        clock = "logged (GPS) time" if args.clock == "gps" else "time the server received them"
        print(
            f"{doc['records']} record(s) of {args.vehicle} with {clock} >= {when} -> {out} "
            f"({kinds or 'none'})"
        )
        if doc["records"] == 0 and args.clock == "gps":
            print(
                "none: if the cab's log carries another clock (a replayed trace), "
                "try --clock received",
                file=sys.stderr,
            )
        if doc["dropped_total"]:
            print(
                f"{doc['dropped_total']} record(s) dropped by the cab's outbox at its bound "
                "(oldest first): never uploaded, not in this file (all time, not only --since)"
            )
    return 0
