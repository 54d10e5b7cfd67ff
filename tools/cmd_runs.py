"""``nagashi runs list|show|compare|reproduce``: the pipeline's runs database."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

DEFAULT_DB = "build/runs.sqlite"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    runs = sub.add_parser("runs", help="list, show, compare and reproduce pipeline runs")
    rsub = runs.add_subparsers(dest="runs_command", metavar="ACTION")
    rsub.required = True

    def db_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", default=DEFAULT_DB, help=f"runs database (default {DEFAULT_DB})")
        p.add_argument("--json", action="store_true")

    ls = rsub.add_parser("list", help="recent runs, newest first")
    db_arg(ls)
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--pipeline", help="only runs of this pipeline")
    ls.set_defaults(func=cmd_runs_list)

    show = rsub.add_parser("show", help="one run: steps, parameters, inputs, metrics, gates")
    db_arg(show)
    show.add_argument("id", type=int)
    show.set_defaults(func=cmd_runs_show)

    cmp_ = rsub.add_parser("compare", help="two runs' parameters and metrics side by side")
    db_arg(cmp_)
    cmp_.add_argument("a", type=int)
    cmp_.add_argument("b", type=int)
    cmp_.add_argument("--all", action="store_true", help="also rows that are equal")
    cmp_.set_defaults(func=cmd_runs_compare)

    rep = rsub.add_parser("reproduce", help="re-run a run from its record; check the bundle bytes")
    db_arg(rep)
    rep.add_argument("id", type=int)
    rep.add_argument(
        "--workdir", help="where to re-run (default: the recorded workdir, outputs replaced)"
    )
    rep.add_argument("--jobs", type=int, default=1)
    rep.set_defaults(func=cmd_runs_reproduce)


def _open(args: argparse.Namespace) -> Any:
    from tools.pipeline.runsdb import RunsDB

    return RunsDB(args.db, create=False)


def cmd_runs_list(args: argparse.Namespace) -> int:
    with _open(args) as db:
        rows = db.list_runs(args.limit, args.pipeline)
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    print(f"{'id':>4}  {'pipeline':<12} {'started (UTC)':<20} {'status':<8} {'steps':<28} bundle")
    for r in rows:
        steps = ", ".join(f"{k} {v}" for k, v in sorted(r["steps"].items()))
        commit = (r["git_commit"] or "")[:8] + ("+dirty" if r["git_dirty"] else "")
        print(
            f"{r['id']:>4}  {r['pipeline']:<12} {r['started_at'][:19]:<20} {r['status']:<8} "
            f"{steps:<28} {(r['bundle_id'] or '-')[:16]}  {commit}"
        )
    return 0


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested metrics as dotted keys of scalars (lists indexed)."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for k in sorted(value):
            out.update(flatten(value[k], f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, list) and value and any(isinstance(v, dict | list) for v in value):
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = value
    return out


def cmd_runs_show(args: argparse.Namespace) -> int:
    with _open(args) as db:
        rec = db.get_run(args.id)
    if args.json:
        print(json.dumps(rec, indent=2, sort_keys=True, ensure_ascii=False))
        return 0
    print(f"run {rec['id']}: {rec['pipeline']} ({rec['pipeline_path']})  status {rec['status']}")
    print(f"  started {rec['started_at']}  finished {rec['finished_at']}")
    print(f"  git {rec['git_commit']}{' (dirty)' if rec['git_dirty'] else ''}")
    print(f"  workdir {rec['workdir']}  options {json.dumps(rec['options'], sort_keys=True)}")
    if rec["bundle_id"]:
        print(f"  bundle {rec['bundle_id']}  manifest sha256 {rec['manifest_sha256']}")
    if rec["error"]:
        print(f"  error: {rec['error']}")
    for s in rec["steps"]:
        took = f" {s['duration_s']:.1f} s" if s["duration_s"] is not None else ""
        print(f"- {s['step']} ({s['kind']}): {s['status']}{took}  {s['reason']}")
        if s["produced_by_run"] and s["produced_by_run"] != rec["id"]:
            print(f"    outputs from run {s['produced_by_run']}")
        if s["params"]:
            print("    params: " + json.dumps(s["params"], sort_keys=True))
        for name, entries in (s["input_hashes"] or {}).items():
            for where, h in entries:
                print(f"    input {name}: {where}  {h[:16]}")
        if s["code_version"]:
            print(f"    code {s['code_version'][:16]}")
        for name, h in (s["output_hashes"] or {}).items():
            print(f"    output {name}: {s['outputs'][name]}  {h[:21]}")
        if s["verdict"]:
            v = s["verdict"]
            print(f"    gate {v['gate']}: {'pass' if v['passed'] else 'FAIL'}: {v['reason']}")
        for k, v in flatten(s["metrics"] or {}).items():
            if k != "manifest" and not k.startswith("manifest."):
                print(f"    {k}: {v}")
        if s["error"]:
            print(f"    error: {s['error']}")
    if rec["manifest"]:
        print("manifest:")
        for k, v in flatten(rec["manifest"]).items():
            print(f"  {k}: {v}")
    return 0


def compare_rows(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, value in a, value in b) for every parameter, input, code version, metric, gate."""

    def table(rec: dict[str, Any]) -> dict[str, Any]:
        t: dict[str, Any] = {
            "run.status": rec["status"],
            "run.git_commit": rec["git_commit"],
            "run.git_dirty": rec["git_dirty"],
            "run.bundle_id": rec["bundle_id"],
            "run.manifest_sha256": rec["manifest_sha256"],
        }
        for s in rec["steps"]:
            n = s["step"]
            t[f"{n}.status"] = s["status"]
            for k, v in (s["params"] or {}).items():
                t[f"{n}.params.{k}"] = v
            for k, entries in (s["input_hashes"] or {}).items():
                t[f"{n}.inputs.{k}"] = ",".join(h[:12] for _, h in entries)
            t[f"{n}.code"] = (s["code_version"] or "")[:12] or None
            for k, v in flatten(s["metrics"] or {}).items():
                if k != "manifest" and not k.startswith("manifest."):
                    t[f"{n}.metrics.{k}"] = v
            if s["verdict"]:
                t[f"{n}.gate"] = ("pass: " if s["verdict"]["passed"] else "FAIL: ") + s["verdict"][
                    "reason"
                ]
        return t

    ta, tb = table(a), table(b)
    keys = list(dict.fromkeys([*ta, *tb]))
    return [(k, ta.get(k), tb.get(k)) for k in keys]


def _cell(v: Any, width: int) -> str:
    s = json.dumps(v) if isinstance(v, list | dict) else str(v)
    return s if len(s) <= width else s[: width - 1] + "…"


def cmd_runs_compare(args: argparse.Namespace) -> int:
    with _open(args) as db:
        a, b = db.get_run(args.a), db.get_run(args.b)
    rows = compare_rows(a, b)
    if args.json:
        print(
            json.dumps(
                [{"key": k, "a": va, "b": vb, "differs": va != vb} for k, va, vb in rows],
                indent=2,
                sort_keys=True,
            )
        )
        return 0
    shown = [r for r in rows if args.all or r[1] != r[2]]
    kw = max([len(k) for k, _, _ in shown] + [8])
    print(f"{'':<{kw}}   {'run ' + str(args.a):<32}  run {args.b}")
    for k, va, vb in shown:
        mark = "*" if va != vb else " "
        print(f"{k:<{kw}} {mark} {_cell(va, 32):<32}  {_cell(vb, 32)}")
    if not args.all:
        print(f"({len(rows) - len(shown)} equal rows hidden; --all shows them)", file=sys.stderr)
    return 0


def cmd_runs_reproduce(args: argparse.Namespace) -> int:
    from tools.cmd_pipeline import _progress
    from tools.pipeline.errors import ReproduceError
    from tools.pipeline.reproduce import reproduce_run
    from tools.pipeline.status import RunStatus

    result, report = reproduce_run(
        args.db, args.id, args.workdir, jobs=args.jobs, progress=None if args.json else _progress
    )
    if args.json:
        print(json.dumps(result.to_json(), indent=2, sort_keys=True))
    else:
        print(f"run {result.run_id} reproduced as run {result.new_run_id}")
        print(f"  recorded bundle {result.bundle_id}")
        print(f"  new bundle      {result.new_bundle_id}")
        for c in result.code_changes:
            print(f"  code: {c}")
        if result.output_diffs:
            print("  steps whose outputs differ: " + ", ".join(result.output_diffs))
        print("  same bytes: " + ("yes" if result.same_bytes else "NO"))
    if not result.same_bytes:
        raise ReproduceError(
            f"run {result.run_id} did not reproduce: bundle {result.new_bundle_id} "
            f"!= {result.bundle_id}"
            + (
                f" (status {report.status}: {report.error})"
                if report.status != RunStatus.OK
                else ""
            )
            + (
                f"; outputs differ in {', '.join(result.output_diffs)}"
                if result.output_diffs
                else ""
            )
        )
    return 0
