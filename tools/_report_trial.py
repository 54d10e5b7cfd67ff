"""``nagashi report trial --logs ...``: per-shift field-trial summary with plots
(:mod:`tools.field.trial`).

Registered on the ``report`` group by :mod:`tools.cmd_report`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register_trial(rsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = rsub.add_parser(
        "trial",
        help="per-shift summary of trip logs: distance, occupied share, guidance, fallbacks",
    )
    p.add_argument("--logs", nargs="+", required=True, metavar="FILE", help="log files or dirs")
    p.add_argument("--out", default="trial-report", help="directory for the plots (PNG)")
    p.add_argument("--no-plots", action="store_true", help="figures only")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_report_trial)


def _pct(x: float | None) -> str:
    return "n/a (no meter events logged)" if x is None else f"{100 * x:.1f} %"


def cmd_report_trial(args: argparse.Namespace) -> int:
    from tools.field.trial import report_trial

    doc = report_trial(args.logs, None if args.no_plots else Path(args.out))
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False))
        return 0
    for s in doc["shifts"]:
        print(f"shift {s['run_id']} vehicle {s['vehicle_id'] or '?'}: {s['start']} .. {s['end']}")
        print(f"  distance        {s['distance_km']:.2f} km in {s['duration_h']:.2f} h")
        print(f"  occupied share  {_pct(s['occupied_share'])}")
        share = s["guidance_share"]
        print(
            f"  guidance        {'n/a' if share is None else f'{100 * share:.1f} %'} "
            f"of {s['ticks']} ticks"
        )
        for code, n in s["fallbacks_by_reason"].items():
            print(f"  fallback {code}: {n}")
        if s.get("plot"):
            print(f"  plot: {s['plot']}")
    for t in doc["torn_tails"]:
        print(f"warning: torn record at {t}")
    return 0
