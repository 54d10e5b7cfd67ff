"""``nagashi demand build|train|eval|gate|map``: statistical and predicted demand."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from tools.errors import ToolsError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``nagashi demand``: one helper per sub-command."""
    demand = sub.add_parser("demand", help="build, train, evaluate, gate and map demand")
    dsub = demand.add_subparsers(dest="demand_command", metavar="ACTION")
    dsub.required = True
    _add_build(dsub)
    _add_train(dsub)
    _add_eval_and_gate(dsub)
    _add_rolling(dsub)
    _add_map(dsub)


def _add_build(dsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    build = dsub.add_parser(
        "build", help="statistical demand (DemandTable) from TLC / Uber trip files"
    )
    build.add_argument("--tiles", required=True, help="tile database or its directory")
    build.add_argument(
        "--trips",
        required=True,
        nargs="+",
        help="trip files: TLC yellow-cab CSVs, the Uber 2014 pickups (CSV or its .zip)",
    )
    build.add_argument(
        "--days",
        default=None,
        metavar="D1..D2,D3",
        help="only pickups on these local dates, e.g. 2014-04-01..2014-04-23 (ranges inclusive)",
    )
    build.add_argument("--out", required=True, help="output demand directory")
    build.add_argument("--json", action="store_true", help="print the report as JSON")
    build.set_defaults(func=cmd_build)


def _add_train(dsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    train = dsub.add_parser(
        "train", help="train the ONNX predicted-demand model (and its statistics) into a dir"
    )
    train.add_argument("--tiles", required=True, help="tile database or its directory")
    train.add_argument(
        "--train",
        required=True,
        nargs="+",
        help="training trip files (with --train-days: a month of pickups, the Uber zip)",
    )
    train.add_argument(
        "--valid",
        nargs="+",
        help="validation trip CSV files (the link model, without --train-days)",
    )
    train.add_argument(
        "--train-days",
        default=None,
        metavar="D1..D2",
        help="the recent-demand cell model: train on these consecutive dates of --train,"
        " e.g. 2014-04-01..2014-04-23 (its choices are made on the last 14 of them:"
        " two validation weeks)",
    )
    train.add_argument(
        "--values",
        nargs="+",
        default=None,
        help="with --train-days: yellow-cab files for fares, trip times and drop-offs",
    )
    train.add_argument(
        "--slot-minutes", type=int, choices=[15, 30], default=15, help="with --train-days"
    )
    train.add_argument(
        "--train-windows",
        type=_int_set,
        default=None,
        metavar="I,J",
        help="windows of windows-mode training files to use (the rest are held out)",
    )
    train.add_argument(
        "--trees", type=int, default=None, help="most trees to try (default: TrainConfig's)"
    )
    train.add_argument("--out", required=True, help="output demand/model directory")
    train.add_argument("--json", action="store_true")
    train.set_defaults(func=cmd_train)


def _add_eval_and_gate(dsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``eval`` and ``gate`` take the same options."""
    for name, helptext, func in (
        ("eval", "held-out metrics of the model and of statistics", cmd_eval),
        ("gate", "exit 1 (and ship statistics only) unless the model beats statistics", cmd_gate),
    ):
        p = dsub.add_parser(name, help=helptext)
        p.add_argument("--model", required=True, help="directory written by demand train")
        p.add_argument("--trips", required=True, nargs="+", help="held-out trip CSV files")
        p.add_argument(
            "--tiles", default=None, help="tile database (default: the one used for training)"
        )
        p.add_argument(
            "--windows",
            type=_int_set,
            default=None,
            metavar="I,J",
            help="windows of windows-mode files (default: those not used for training)",
        )
        p.add_argument(
            "--days",
            default=None,
            metavar="D1..D2",
            help="cell model: held-out dates (default: the 7 after its last training date)",
        )
        p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)


def _add_rolling(dsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    roll = dsub.add_parser(
        "rolling",
        help="rolling-origin evaluation of the recent-demand model on a month of pickups",
    )
    roll.add_argument("--tiles", required=True, help="tile database or its directory")
    roll.add_argument("--trips", required=True, nargs="+", help="the month (the Uber zip)")
    roll.add_argument(
        "--origins",
        default="2014-04-17,2014-04-24",
        help="origin dates d: train before d, evaluate d .. d+6 (comma-separated)",
    )
    roll.add_argument(
        "--slot-minutes",
        type=int,
        nargs="+",
        choices=[15, 30],
        default=[15, 30],
        help="slot lengths to evaluate",
    )
    roll.add_argument(
        "--all-candidates",
        action="store_true",
        help="also report the held-out figures of the candidates the validation week did not"
        " choose (for the record; slower)",
    )
    roll.add_argument("--json", action="store_true")
    roll.set_defaults(func=cmd_rolling)


def _add_map(dsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dmap = dsub.add_parser("map", help="draw links coloured by expected pickups (PNG)")
    dmap.add_argument(
        "--demand", required=True, help="demand directory, or a bundle directory (its demand/)"
    )
    dmap.add_argument(
        "--tiles", default=None, help="tile database it was built on (default: the bundle's)"
    )
    dmap.add_argument("--slot", required=True, help='day and time, e.g. "Tue 18:00"')
    dmap.add_argument("--out", required=True, help="PNG file to write")
    dmap.add_argument(
        "--source",
        choices=["auto", "model", "statistics"],
        default="auto",
        help="auto: the ONNX model when one ships, else statistics",
    )
    dmap.add_argument("--json", action="store_true")
    dmap.set_defaults(func=cmd_map)


def _int_set(text: str) -> set[int]:
    try:
        return {int(t) for t in text.split(",") if t.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected indices like 0,1 not {text!r}") from None


def _print(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False))
        return
    for k, v in doc.items():
        if isinstance(v, dict | list):
            v = json.dumps(v, sort_keys=True, ensure_ascii=False)
        print(f"{k}: {v}")


def cmd_build(args: argparse.Namespace) -> int:
    from models.statistics import build_demand_table
    from models.trips import parse_days
    from tiles import TileStore

    days = parse_days(args.days) if args.days is not None else None
    with TileStore(args.tiles) as store:
        table, report = build_demand_table(store, args.trips, days=days)
    out = table.save(args.out)
    doc = {
        "out": str(out),
        "version": table.version,
        "scale_factor": round(table.scale_factor, 3),
        "pickups_snapped": report["pickups_snapped"],
        "inputs": [
            {
                k: f[k]
                for k in (
                    "path",
                    "format",
                    "rows",
                    "duplicates_removed",
                    "outside_days",
                    "kept",
                    "dropped",
                    "mode",
                )
            }
            for f in report["inputs"]
        ],
        "sources": {
            col: [f"{s['path']} ({s['records']})" for s in files]
            for col, files in report["sources"].items()
        },
        "days": report["days"],
        "snapping": {k: v for k, v in report["snapping"].items() if isinstance(v, int)},
        "network_area_pickups_per_day": report["network_area_pickups_per_day"],
        "max_link_pickups_per_h": report["max_link_pickups_per_h"],
    }
    _print(doc, args.json)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from models.train import TrainConfig, train_model
    from tiles import TileStore

    if args.train_days is not None:
        return _train_recent(args)
    if not args.valid:
        raise ToolsError("demand train needs --valid (or --train-days for the cell model)")

    with TileStore(args.tiles) as store:
        doc = train_model(
            store,
            args.train,
            args.valid,
            args.out,
            train_windows=args.train_windows,
            config=(TrainConfig(n_estimators_max=args.trees) if args.trees else TrainConfig()),
        )
    t = doc["training"]
    _print(
        {
            "out": args.out,
            "version": doc["version"],
            "statistics_version": doc["statistics_version"],
            "features": len(doc["features"]),
            "rows": t["rows"],
            "trees": t["n_estimators_selected"],
            "valid_poisson_deviance_model": t["valid_poisson_deviance_model"],
            "valid_poisson_deviance_statistics": t["valid_poisson_deviance_statistics"],
        },
        args.json,
    )
    return 0


def _train_recent(args: argparse.Namespace) -> int:
    from models.rolling import RecentConfig, train_recent_model
    from models.trips import parse_days
    from tiles import TileStore

    if not args.values:
        raise ToolsError("demand train --train-days needs --values (yellow-cab trip files)")
    config = RecentConfig(slot_minutes=args.slot_minutes)
    if args.trees:
        config = dataclasses.replace(config, n_estimators_max=args.trees)
    with TileStore(args.tiles) as store:
        doc = train_recent_model(
            store, args.train, args.values, args.out, parse_days(args.train_days), config
        )
    t = doc["training"]
    _print(
        {
            "out": args.out,
            "version": doc["version"],
            "statistics_version": doc["statistics_version"],
            "kind": doc["kind"],
            "slot_minutes": doc["slot_minutes"],
            "features": len(doc["features"]),
            "train_days": [t["train_days"][0], t["train_days"][-1]],
            "selection": t["selection"],
        },
        args.json,
    )
    return 0


def cmd_rolling(args: argparse.Namespace) -> int:
    import datetime as dt

    from models.rolling import RecentConfig, cached_month, rolling_origin
    from tiles import TileStore

    try:
        origins = [dt.date.fromisoformat(t) for t in args.origins.split(",") if t.strip()]
    except ValueError:
        raise ToolsError(
            f"--origins: expected dates like 2014-04-24, not {args.origins!r}"
        ) from None
    out: list[dict[str, Any]] = []
    with TileStore(args.tiles) as store:
        md = cached_month(store, args.trips)
        for minutes in args.slot_minutes:
            out.extend(
                rolling_origin(
                    md, origins, RecentConfig(slot_minutes=minutes), report_all=args.all_candidates
                )
            )
    keys = (
        "origin",
        "slot_minutes",
        "days",
        "kind",
        "trees",
        "heldout_pickups",
        "sources",
        "ratio_model_over_statistics",
        "ratio_model_over_recent_baseline",
        "ratio_recent_baseline_over_statistics",
        "ratio_offline_model_over_statistics",
        "selection",
        "train_days",
        "wall_s",
    )
    doc = {"results": [{k: r[k] for k in (*keys, "candidates_on_heldout") if k in r} for r in out]}
    _print(doc, args.json)
    return 0


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from models.evaluate import evaluate
    from models.predict import DemandModel, InferenceConfig, read_model_json
    from tiles import TileStore

    tiles = args.tiles or read_model_json(args.model).get("training", {}).get("tiles")
    if not tiles:
        raise ToolsError("no --tiles given and the model does not name its training tiles")
    model = DemandModel(args.model, config=InferenceConfig(intra_op_threads=args.threads))
    from models.trips import parse_days

    days = parse_days(args.days) if args.days is not None else None
    with TileStore(tiles) as store:
        return evaluate(store, args.model, args.trips, windows=args.windows, model=model, days=days)


def cmd_eval(args: argparse.Namespace) -> int:
    _print(_evaluate(args), args.json)
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    from models.evaluate import apply_gate

    result = _evaluate(args)
    passed = apply_gate(args.model, result)
    _print(
        {
            "passed": passed,
            "shipping": "statistics + onnx model" if passed else "statistics only",
            "ratio_model_over_statistics": result["ratio_model_over_statistics"],
            "ratio_model_over_recent_baseline": result["ratio_model_over_recent_baseline"],
            "evaluated_on": result["evaluated_on"],
        },
        args.json,
    )
    return 0 if passed else 1


def bundle_demand_and_tiles(demand: str, tiles: str | None) -> tuple[Path, Path]:
    """(demand dir, tiles) from ``--demand`` (a demand directory, or a bundle directory with
    its ``demand/`` and ``tiles.sqlite``) and ``--tiles`` (default: the bundle's)."""
    d = Path(demand)
    is_bundle = not (d / "demand.json").is_file() and (d / "demand" / "demand.json").is_file()
    if tiles is not None:
        return (d / "demand" if is_bundle else d), Path(tiles)
    if is_bundle and (d / "tiles.sqlite").is_file():
        return d / "demand", d / "tiles.sqlite"
    raise ToolsError(f"--tiles is needed: {d} is not a bundle directory (demand/, tiles.sqlite)")


def cmd_map(args: argparse.Namespace) -> int:
    from models.render import parse_slot, render_map

    demand, tiles = bundle_demand_and_tiles(args.demand, args.tiles)
    _print(render_map(demand, tiles, parse_slot(args.slot), args.out, args.source), args.json)
    return 0
