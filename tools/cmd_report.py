"""``nagashi report ...``: figures computed from trip logs.

Subcommands live in :data:`SUBCOMMANDS`: each entry registers its own parser on the ``report``
group (add ``report trial`` by writing ``_register_trial(rsub)`` and listing it there).

Log files are plain msgpack streams: a sequence of msgpack maps, one per record, back to back
(what ``agent/triplog.py`` writes as ``trip-*.msgpack``). A directory stands for every
``*.msgpack`` file in it, in name order.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.triplog import ReadReport, read_records
from tools._report_trial import register_trial
from tools.errors import ToolsError


def log_files(paths: Sequence[str]) -> list[Path]:
    """The files named (directories expanded to their ``*.msgpack`` files, sorted)."""
    from tools.field.logpaths import trip_log_paths

    out: list[Path] = []
    for p in trip_log_paths(paths):
        if p.is_dir():
            out.extend(sorted(p.glob("*.msgpack")))
        elif p.is_file():
            out.append(p)
        else:
            raise ToolsError(f"no such log file or directory: {p}")
    if not out:
        raise ToolsError("no log files found")
    return out


def cmd_report_slo(args: argparse.Namespace) -> int:
    from safety import RouteRechecker, slo, stability
    from tiles import TileStore

    files = log_files(args.logs)
    rr = ReadReport()
    store = TileStore(args.tiles) if args.tiles else None
    try:
        recheck = RouteRechecker(store) if store is not None else None
        records = list(read_records(files, rr))
        report = slo(records, recheck)
        steady = stability(records)
    finally:
        if store is not None:
            store.close()
    errors = [f"{p}: unreadable after byte {off} (a torn last record?)" for p, off in rr.torn_tails]
    if report.ticks == 0 and report.unreadable_verdicts == 0:
        lost = sum(report.outbox_dropped.values())
        raise ToolsError(
            f"no tick records in {len(files)} file(s): is it a nagashi trip log "
            f"({report.skipped_records} other records)?"
            + (f" ({lost} record(s) dropped by the cab's outbox at its bound)" if lost else "")
        )
    doc = {**report.to_json(), **steady.to_json(), "files": len(files), "read_errors": errors}
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False))
        return 0

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.2f} %"

    print(f"ticks:        {report.ticks} in {len(files)} file(s)")
    print(f"availability: {pct(report.availability)} ({report.validated} validated)")
    how = "re-checked on the tiles" if report.rechecked else "as logged (no --tiles)"
    print(
        f"quality:      {pct(report.quality)} "
        f"({report.routes_clean}/{report.routes_checked} routes clean, {how})"
    )
    print(f"reliability:  {pct(report.reliability)}")
    share = steady.repeated_link_route_share
    print(
        f"repeated-link routes: {pct(share)} "
        f"({steady.repeated_link_routes}/{steady.route_ticks} route ticks; goal < 5 %)"
    )
    rph = steady.reversals_per_h
    print(
        "reversals:    "
        + ("n/a" if rph is None else f"{rph:.2f} per hour")
        + f" ({steady.reversals} A-B-A changes within 2 min in {steady.hours:.2f} h; goal 0)"
    )
    err = steady.countdown_max_error_m
    print(
        "countdown:    "
        + ("n/a (no countdown logged)" if err is None else f"max error {err:.1f} m")
        + f" ({steady.countdown_checked} positions, {steady.countdown_over_30m} over 30 m; "
        "goal <= 30 m)"
    )
    for vid, n in report.outbox_dropped.items():
        if n:
            print(
                f"  {vid}: {n} record(s) dropped by the cab's outbox at its bound before "
                "upload (oldest first): not in these figures"
            )
    for code, n in report.fallbacks_by_reason.items():
        print(f"  fallback {code}: {n}")
    for code, n in report.violations_by_reason.items():
        print(f"  violation {code}: {n}")
    if report.skipped_records or report.unreadable_verdicts:
        print(
            f"skipped {report.skipped_records} non-tick records, "
            f"{report.unreadable_verdicts} unreadable verdicts"
        )
    for e in errors:
        print(f"warning: {e}")
    return 0


def _register_slo(rsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = rsub.add_parser(
        "slo",
        help="guidance availability x route quality from trip logs",
        description=(
            "Reliability = availability (share of ticks with a validated route) x quality "
            "(share of validated routes without a safety violation when re-checked). "
            "Logs are msgpack streams of maps; a tick record carries its verdict under "
            "'safety'. With --tiles, routes are re-checked with the current rules. Route "
            "stability: the share of route ticks whose route uses a link twice, A-B-A "
            "reversals of the next manoeuvre within 2 minutes per hour, and the largest error "
            "of the countdown to the manoeuvre shown between ticks."
        ),
    )
    p.add_argument("--logs", nargs="+", required=True, metavar="FILE", help="log files or dirs")
    p.add_argument("--tiles", help="tile database of the bundle, to re-check routes")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=cmd_report_slo)


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _register_slo,
    register_trial,  # agent's field-trial summary (tools/_report_trial.py)
]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = sub.add_parser("report", help="figures computed from trip logs")
    rsub = report.add_subparsers(dest="report_command", metavar="REPORT")
    rsub.required = True
    for add in SUBCOMMANDS:
        add(rsub)
