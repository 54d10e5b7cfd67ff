"""``nagashi replay``: recompute logged decisions and say whether they are byte-identical."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay", help="recompute logged decisions with their bundle; byte-identical?"
    )
    p.add_argument("--log", required=True, nargs="+", help="trip-log file(s) or directory")
    p.add_argument("--tick", type=int, default=None, help="only the tick with this seq")
    p.add_argument("--bundle-dir", required=True, help="the bundle, or a store holding it")
    p.add_argument("--timezone", default=None, help="only if the bundle names none")
    p.add_argument(
        "--snapshots",
        nargs="+",
        default=None,
        metavar="DIR",
        help="live snapshot archive(s) (default: live/ beside the trips/ folder of --log)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per tick")
    p.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    from tools.field.replay import replay_log

    total = differ = missing = 0
    for r in replay_log(
        args.log, args.bundle_dir, tick=args.tick, timezone=args.timezone, snapshots=args.snapshots
    ):
        total += 1
        if args.json:
            print(json.dumps(r.to_json(), sort_keys=True))
            missing += bool(r.snapshot_missing)
            differ += not r.identical and not r.snapshot_missing
            continue
        if r.snapshot_missing:  # not replayed: says nothing of the planner
            missing += 1
            print(f"tick #{r.seq}: NOT REPLAYED, {r.snapshot_missing}")
            continue
        if r.identical:
            if args.tick is not None:
                print(f"tick #{r.seq}: byte-identical (bundle {r.bundle_used[:12]})")
            continue
        differ += 1
        print(f"tick #{r.seq}: DIFFERS in {', '.join(r.differing)}")
        if r.bundle_differs:
            print(f"  bundle: logged {r.bundle_logged[:12]}, replayed with {r.bundle_used[:12]}")
        if r.code_differs:
            print(
                f"  code version: logged {r.code_logged.get('package')} "
                f"{str(r.code_logged.get('sha256'))[:12]}, now "
                f"{r.to_json()['code_now']['package']} {r.to_json()['code_now']['sha256'][:12]}"
            )
        for line in r.details:
            print(f"  {line}")
    if not args.json:
        replayed = total - missing
        print(
            f"{replayed} tick(s) replayed: "
            + ("all byte-identical" if differ == 0 else f"{differ} differ")
            + (f"; {missing} not replayed (live snapshot missing)" if missing else "")
        )
    return 0 if differ == 0 and missing == 0 else 1
