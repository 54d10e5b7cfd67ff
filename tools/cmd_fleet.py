"""``nagashi fleet …``: the fleet operator's commands (keys, publishing, tokens, the server).

See docs/fleet.md. ``--root`` is the fleet directory (keys/, repo/, published.json,
fleet.sqlite); it defaults to the current directory.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from datetime import UTC, datetime
from typing import Any

from tools.errors import ToolsError


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    f = sub.add_parser("fleet", help="fleet server: keys, publishing, tokens, serving")
    fsub = f.add_subparsers(dest="fleet_command", metavar="ACTION")
    fsub.required = True
    _register_keys(fsub)
    _register_repository(fsub)
    _register_token(fsub)
    _register_rollout(fsub)
    _register_supply(fsub)
    _register_serve(fsub)


def _with_root(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--root", default=".", help="fleet directory (default: .)")
    return p


def _with_database(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--database",
        default=None,
        help="log and token storage: postgresql://USER@HOST:PORT/DB (password from "
        "PGPASSWORD or ~/.pgpass), or a SQLite file (default: ROOT/fleet.sqlite)",
    )
    return p


def _register_keys(fsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``fleet keys init|rotate|renew-root``."""
    keys = fsub.add_parser("keys", help="create or rotate the repository's signing keys")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    ksub.required = True
    init = _with_root(ksub.add_parser("init", help="new ed25519 keys and metadata v1"))
    init.set_defaults(func=cmd_keys_init)
    rot = _with_root(ksub.add_parser("rotate", help="replace one role's key (new root version)"))
    rot.add_argument(
        "--role", required=True, choices=["root", "targets", "snapshot", "timestamp", "live"]
    )
    rot.set_defaults(func=cmd_keys_rotate)

    renew = _with_root(
        ksub.add_parser("renew-root", help="re-sign root with a fresh expiry (yearly)")
    )
    renew.set_defaults(func=cmd_keys_renew_root)


def _register_repository(fsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``fleet publish|timestamp|prune|status``: the signed repository."""
    pub = _with_root(fsub.add_parser("publish", help="sign and publish a bundle for an area"))
    pub.add_argument("--bundle", required=True, help="bundle directory (built by bundle build)")
    pub.add_argument("--area", required=True)
    pub.add_argument("--json", action="store_true")
    pub.set_defaults(func=cmd_publish)

    ts = _with_root(
        fsub.add_parser("timestamp", help="re-sign snapshot and timestamp (run daily from cron)")
    )
    ts.add_argument(
        "--targets", action="store_true", help="also re-sign targets (its 90-day expiry)"
    )
    ts.set_defaults(func=cmd_timestamp)

    pr = _with_root(
        fsub.add_parser("prune", help="delete chunks and metadata no longer signed (aged)")
    )
    pr.add_argument("--min-age-days", type=float, default=7.0)
    pr.add_argument("--keep-versions", type=int, default=10)
    pr.set_defaults(func=cmd_prune)

    st = _with_database(
        _with_root(fsub.add_parser("status", help="metadata versions, expiry, published areas"))
    )
    st.set_defaults(func=cmd_status)


def _register_token(fsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``fleet token add|revoke``."""
    tok = fsub.add_parser("token", help="vehicle and engineer credentials for the log API")
    tsub = tok.add_subparsers(dest="token_command", metavar="ACTION")
    tsub.required = True
    add = _with_database(_with_root(tsub.add_parser("add", help="create a token (printed once)")))
    who = add.add_mutually_exclusive_group(required=True)
    who.add_argument("--vehicle", help="vehicle id: may upload its own logs only")
    who.add_argument("--engineer", help="engineer name: may read every vehicle's logs")
    add.set_defaults(func=cmd_token_add)
    rev = _with_database(
        _with_root(tsub.add_parser("revoke", help="revoke every token of a vehicle/engineer"))
    )
    rev.add_argument("name")
    rev.set_defaults(func=cmd_token_revoke)


def _register_rollout(fsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``fleet rollout start|promote|halt|status|evaluate``."""
    ro = fsub.add_parser("rollout", help="staged rollouts of a bundle to an area's cabs")
    rsub = ro.add_subparsers(dest="rollout_command", metavar="ACTION")
    rsub.required = True
    rs = _with_database(_with_root(rsub.add_parser("start", help="start a staged rollout")))
    rs.add_argument("--bundle", required=True, help="bundle directory (built by bundle build)")
    rs.add_argument("--area", required=True)
    rs.add_argument("--stages", default="5%,25%,100%", help="shares of the cabs, in order")
    rs.add_argument("--cohort", default=None, help="a named cohort only (e.g. trial-cabs)")
    rs.add_argument("--max-failures", default="5%", help="halt past this failed share")
    rs.add_argument("--min-healthy", default="95%", help="promote at this healthy share")
    rs.add_argument(
        "--min-stage-minutes", type=float, default=60.0, help="and after this long in a stage"
    )
    rs.set_defaults(func=cmd_rollout_start)
    for name, helptext, func in (
        ("promote", "move to the next stage (past the last: publish)", "cmd_rollout_promote"),
        ("halt", "stop; the stage's cabs go back to the published bundle", "cmd_rollout_halt"),
    ):
        rp = _with_database(_with_root(rsub.add_parser(name, help=helptext)))
        rp.add_argument("--area", required=True)
        rp.add_argument("--cohort", default=None)
        if name == "promote":
            rp.add_argument("--force", action="store_true", help="even past the failure share")
        rp.set_defaults(func=globals()[func])
    rst = _with_database(_with_root(rsub.add_parser("status", help="stages, health, decision")))
    rst.set_defaults(func=cmd_rollout_status)
    rev_ = _with_database(
        _with_root(rsub.add_parser("evaluate", help="apply the rules: promote or halt (cron)"))
    )
    rev_.set_defaults(func=cmd_rollout_evaluate)


def _register_supply(fsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``fleet supply``."""
    sup = fsub.add_parser(
        "supply", help="the supply prior for the bundle, from the fleet's trip logs"
    )
    sup.add_argument(
        "--logs", nargs="+", required=True, help="trip-log files or folders (agent data folders)"
    )
    sup.add_argument("--tiles", required=True, help="the logs' road tiles (or their bundle)")
    sup.add_argument("--out", required=True, help="the supply table to write (supply.npz)")
    sup.add_argument(
        "--cabs",
        type=_positive_int,
        default=None,
        help="write it for a fleet of N cabs (default: the vehicles in the logs)",
    )
    sup.add_argument("--json", action="store_true", help="print the summary as JSON")
    sup.set_defaults(func=cmd_supply)


def _register_serve(fsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``fleet serve``: the address, then the bounds (sync._serve_limits), the live period."""
    serve = _with_database(
        _with_root(fsub.add_parser("serve", help="serve the repository and log ingest"))
    )
    serve.add_argument("--port", type=int, default=8470)
    serve.add_argument("--host", default="127.0.0.1", help="bind address (put TLS in front)")
    from sync._serve_limits import ServeLimits

    d = ServeLimits()
    serve.add_argument(
        "--header-timeout",
        type=_positive,
        default=d.header_timeout_s,
        help=f"seconds to receive a request's headers, else 408 (default {d.header_timeout_s:g})",
    )
    serve.add_argument(
        "--body-timeout",
        type=_positive,
        default=d.body_timeout_s,
        help=f"seconds to receive a request's body, else 408 (default {d.body_timeout_s:g})",
    )
    serve.add_argument(
        "--max-connections-per-ip",
        type=_positive_int,
        default=d.max_connections_per_ip,
        help="open connections per client address, else 429 "
        f"(default {d.max_connections_per_ip}; behind a proxy, all share its address)",
    )
    serve.add_argument(
        "--max-connections",
        type=_positive_int,
        default=d.max_connections,
        help=f"concurrent connections and requests, else 503 (default {d.max_connections})",
    )
    serve.add_argument(
        "--token-rate",
        type=_positive,
        default=d.token_rate_per_s,
        help=f"requests per second per token, sustained (default {d.token_rate_per_s:g})",
    )
    serve.add_argument(
        "--token-burst",
        type=_positive_int,
        default=d.token_burst,
        help=f"requests per token in a burst, else 429 (default {d.token_burst})",
    )
    serve.add_argument(
        "--live-build-every",
        type=_positive,
        default=30.0,
        metavar="S",
        help="seconds between builds of the live snapshots (default 30)",
    )
    serve.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"]
    )
    serve.set_defaults(func=cmd_serve)


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _require_repository(root: str) -> None:
    """A token goes into the fleet's own database: a mistyped ``--root`` must not create a
    new one that no server reads."""
    from pathlib import Path

    if not (Path(root) / "repo" / "metadata" / "1.root.json").is_file():
        raise ToolsError(
            f"{root} holds no fleet repository (mistyped --root? else `nagashi fleet keys init`)"
        )


def cmd_keys_init(args: argparse.Namespace) -> int:
    from sync import FleetRepository

    path = FleetRepository(args.root).init(_now())
    print(f"repository initialised; provision vehicles with {path}")
    print("move keys/root.pem offline now; bring it back only to rotate keys")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from sync import FleetRepository

    repo = FleetRepository(args.root)
    v = repo.rotate_key(args.role, _now())
    if args.role == "live":  # delegated by targets: the root does not change
        tv = repo.targets_md().signed.version
        print(f"rotated the live key: targets metadata is now version {tv} (root {v})")
    else:
        print(f"rotated the {args.role} key: root metadata is now version {v}")
    return 0


def cmd_keys_renew_root(args: argparse.Namespace) -> int:
    from sync import FleetRepository

    repo = FleetRepository(args.root)
    v = repo.renew_root(_now())
    print(f"root metadata version {v} valid until {repo.root_md().signed.expires.isoformat()}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from sync import FleetRepository

    r = FleetRepository(args.root).publish(args.bundle, args.area, _now())
    if args.json:
        print(json.dumps(r.__dict__, indent=2))
    else:
        print(
            f"published {r.bundle_id} for {r.area}: targets v{r.targets_version}, "
            f"{r.chunks_new}/{r.chunks_total} chunks new ({r.bytes_new} bytes)"
        )
    return 0


def cmd_timestamp(args: argparse.Namespace) -> int:
    from sync import FleetRepository

    repo = FleetRepository(args.root)
    repo.resign(_now(), targets=args.targets)
    print(f"timestamp valid until {repo.timestamp_md().signed.expires.isoformat()}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from sync import FleetRepository

    n = FleetRepository(args.root).prune(
        time.time(), min_age_s=args.min_age_days * 86400, keep_versions=args.keep_versions
    )
    print(f"removed {n} file(s)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sync import FleetRepository
    from sync.logstore import is_postgres_url, open_storage

    status = FleetRepository(args.root).status()
    database = args.database
    db = Path(database or Path(args.root) / "fleet.sqlite")
    # per vehicle: records stored, records its outbox dropped at the bound
    if (database and is_postgres_url(database)) or db.is_file():
        store = open_storage(args.root, database)
        try:
            status["logs"] = store.vehicle_summary()
        finally:
            store.close()
    print(json.dumps(status, indent=2))
    return 0


def cmd_token_add(args: argparse.Namespace) -> int:
    from sync.logstore import open_storage

    _require_repository(args.root)
    store = open_storage(args.root, args.database)
    kind, name = ("vehicle", args.vehicle) if args.vehicle else ("engineer", args.engineer)
    try:
        token = store.add_token(kind, name, time.time())
    finally:
        store.close()
    print(token)
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from sync.logstore import open_storage

    _require_repository(args.root)
    store = open_storage(args.root, args.database)
    try:
        n = store.revoke(args.name)
    finally:
        store.close()
    print(f"revoked {n} token(s) of {args.name}")
    return 0


def cmd_supply(args: argparse.Namespace) -> int:
    import sys

    from tools.field.supply import build_supply

    table, summary = build_supply(args.logs, args.tiles, args.cabs)
    try:
        path = table.save(args.out)
    except OSError as e:
        raise ToolsError(f"cannot write {args.out}: {e.strerror or e}") from e
    summary["out"] = str(path)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return 0
    vac = summary["vacancy_from"]
    if summary["ticks_without_time"] or summary["torn_tails"]:
        print(
            f"supply: left out {summary['ticks_without_time']} tick(s) without a time and "
            f"{summary['torn_tails']} torn file tail(s)",
            file=sys.stderr,
        )
    print(
        f"supply: {summary['passes']} vacant passes on {summary['links']} links, "
        f"{summary['days']:.3f} days observed in {summary['observed_slots']} of 336 slots, "
        f"{summary['measured_cabs']} cab(s) (written for {summary['cabs']}) -> {path}"
    )
    print(f"supply: version {summary['version']} (the manifest's fleet_supply.version)")
    if vac["guidance"]:
        print(
            f"supply: {vac['guidance']} of {vac['guidance'] + vac['meter']} run(s) logged no "
            "taximeter event: their ticks with cruising guidance were taken as vacant",
            file=sys.stderr,
        )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import sys

    try:
        from sync._serving import ServeLimits
        from sync.server import ServerConfig, serve
    except ImportError as e:
        raise ToolsError(
            f"fleet serve needs the server extra (pip install '.[server]'): {e}"
        ) from e

    limits = ServeLimits(
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        max_connections_per_ip=args.max_connections_per_ip,
        max_connections=args.max_connections,
        token_rate_per_s=args.token_rate,
        token_burst=args.token_burst,
    )
    serve(
        args.root,
        args.host,
        args.port,
        ServerConfig(limits=limits, live_build_every_s=args.live_build_every),
        database=args.database,
        log_level=args.log_level,
        on_ready=lambda url: print(f"serving {args.root} on {url}/", file=sys.stderr, flush=True),
    )
    return 0


def _percent(text: str, what: str) -> float:
    try:
        v = float(text.strip().removesuffix("%")) / 100.0
    except ValueError:
        v = math.nan
    if not 0.0 <= v <= 1.0:
        raise ToolsError(f"{what}: expected a share such as 5%, got {text!r}")
    return v


def _rollouts(args: argparse.Namespace) -> Any:
    from sync import FleetRepository
    from sync.logstore import open_storage
    from sync.rollout import Rollouts

    _require_repository(args.root)
    return Rollouts(FleetRepository(args.root), open_storage(args.root, args.database))


def _print_rollout(doc: dict[str, Any]) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True))


def cmd_rollout_start(args: argparse.Namespace) -> int:
    from sync.rollout import RolloutRules, parse_stages

    rules = RolloutRules(
        max_failure_fraction=_percent(args.max_failures, "--max-failures"),
        min_healthy_fraction=_percent(args.min_healthy, "--min-healthy"),
        min_stage_s=args.min_stage_minutes * 60.0,
    )
    stages = parse_stages(args.stages)
    ro = _rollouts(args)
    try:
        doc = ro.start(args.bundle, args.area, stages, _now(), cohort=args.cohort, rules=rules)
        _print_rollout(doc)
    finally:
        ro.storage.close()
    return 0


def cmd_rollout_promote(args: argparse.Namespace) -> int:
    ro = _rollouts(args)
    try:
        _print_rollout(ro.promote(args.area, args.cohort, _now(), force=args.force))
    finally:
        ro.storage.close()
    return 0


def cmd_rollout_halt(args: argparse.Namespace) -> int:
    ro = _rollouts(args)
    try:
        _print_rollout(ro.halt(args.area, args.cohort, _now(), "by the operator"))
    finally:
        ro.storage.close()
    return 0


def cmd_rollout_status(args: argparse.Namespace) -> int:
    ro = _rollouts(args)
    try:
        _print_rollout({"rollouts": ro.status(time.time())})
    finally:
        ro.storage.close()
    return 0


def cmd_rollout_evaluate(args: argparse.Namespace) -> int:
    ro = _rollouts(args)
    try:
        _print_rollout({"actions": ro.evaluate(_now())})
    finally:
        ro.storage.close()
    return 0
