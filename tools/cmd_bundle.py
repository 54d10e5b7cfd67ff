"""``nagashi bundle build|verify|pull|status``: bundles on the build side and the device."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tools.errors import ToolsError
from tools.server_options import CA_FILE_HELP, check_ca_file, check_server_url


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    b = sub.add_parser("bundle", help="build, verify and pull versioned bundles")
    bsub = b.add_subparsers(dest="bundle_command", metavar="ACTION")
    bsub.required = True

    build = bsub.add_parser(
        "build",
        help="assemble a bundle from built tiles and demand (refuses version mismatches)",
        description="Inputs come from the flags, else from the manifest's inputs: section "
        "(paths relative to the manifest file). The bundle is written to OUT/<bundle id>.",
    )
    build.add_argument("--manifest", required=True, help="base or composed manifest (YAML)")
    build.add_argument(
        "--overlay", action="append", default=[], help="overlay(s) composed over --manifest"
    )
    build.add_argument("--out", required=True, help="directory that receives <bundle id>/")
    build.add_argument("--tiles", type=Path, help="tiles.sqlite (or its directory)")
    build.add_argument("--demand", type=Path, help="directory with demand.npz, demand.json")
    build.add_argument("--params", type=Path, help="params.yaml")
    build.add_argument("--area", type=Path, help="area.geojson")
    build.add_argument(
        "--supply",
        type=Path,
        help="supply.npz from `nagashi fleet supply` (the manifest names its fleet_supply.version)",
    )
    build.add_argument("--json", action="store_true")
    build.set_defaults(func=cmd_build)

    verify = bsub.add_parser(
        "verify",
        help="check every file of a bundle against its manifest",
        description="Hash every file of BUNDLE, or of the active bundle of --store; a damaged "
        "bundle is one line on stderr and exit status 2 (`bundle pull` fetches it again).",
    )
    verify.add_argument("bundle", nargs="?", help="bundle directory")
    verify.add_argument("--store", help="device bundle store: verify its active bundle")
    verify.add_argument("--health", action="store_true", help="also run the default health check")
    verify.set_defaults(func=cmd_verify)

    pull = bsub.add_parser("pull", help="pull the area's bundle from a fleet server (device side)")
    pull.add_argument("--store", required=True, help="device bundle store directory")
    pull.add_argument("--server", required=True, help="fleet server URL")
    pull.add_argument("--area", required=True)
    pull.add_argument("--trusted-root", required=True, help="the fleet's root.json (provisioned)")
    pull.add_argument("--ca-file", default=None, help=CA_FILE_HELP)
    pull.add_argument("--vehicle", default=None, help="staged rollouts: this cab's vehicle id")
    pull.add_argument("--cohort", default=None, help="staged rollouts: this cab's cohort")
    pull.add_argument(
        "--verify",
        action="store_true",
        help="hash every file of the active bundle before saying it is up to date (without: "
        "sizes and mtimes against those recorded when it was last hashed)",
    )
    pull.add_argument("--json", action="store_true")
    pull.set_defaults(func=cmd_pull)

    status = bsub.add_parser(
        "status",
        help="current / trial / last good bundle of a store, and whether the active is intact",
    )
    status.add_argument("--store", required=True)
    status.add_argument(
        "--verify", action="store_true", help="hash every file (default: sizes and mtimes)"
    )
    status.set_defaults(func=cmd_status)


def cmd_build(args: argparse.Namespace) -> int:
    from sync import BundleInputs, build_bundle, compose

    composed = compose(args.manifest, *args.overlay)
    inputs = BundleInputs.resolve(
        composed,
        tiles=args.tiles,
        demand=args.demand,
        params=args.params,
        area=args.area,
        supply=args.supply,
    )
    bundle = build_bundle(composed, inputs, args.out)
    out = {
        "bundle_id": bundle.bundle_id,
        "path": str(bundle.path),
        "manifest_sha256": bundle.manifest_sha256,
        "files": {k: v.size_bytes for k, v in sorted(bundle.files.items())},
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(bundle.path)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from sync import Bundle, BundleStore, BundleVerifyError, default_health_check

    if (args.bundle is None) == (args.store is None):
        raise ToolsError("bundle verify: give a bundle directory or --store, not both")
    if args.store is not None:
        store = BundleStore(args.store)
        current = store.current_id()
        if current is None:
            raise ToolsError(f"bundle store {args.store} has no active bundle")
        problem = store.check_bundle(current, full=True)
        if problem is not None:
            raise BundleVerifyError(
                f"active bundle {current[:12]} is damaged: {problem} "
                "(`nagashi bundle pull` fetches it again)"
            )
        bundle = Bundle(store.bundle_path(current))
    else:
        bundle = Bundle(args.bundle)
    bundle.verify()
    if args.health:
        default_health_check(bundle)
    print(f"ok {bundle.bundle_id} ({len(bundle.files)} files)")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from sync import BundleStore, FetchConfig, PullConfig, Updater

    check_server_url(args.server, "--server")
    root = Path(args.trusted_root)
    if not root.is_file():
        raise ToolsError(f"trusted root not found: {root}")
    config = PullConfig(
        args.server,
        args.area,
        fetch=FetchConfig(ca_file=check_ca_file(args)),
        vehicle_id=args.vehicle,
        cohort=args.cohort,
    )
    u = Updater(BundleStore(args.store), config, root.read_bytes())
    try:
        res = u.pull(verify=args.verify)
    finally:
        u.close()
    if args.json:
        print(json.dumps(res.__dict__, indent=2))
    else:
        print(f"{res.status} {res.bundle_id} ({res.bytes_downloaded} bytes downloaded)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """The store's state as JSON; a damaged active bundle is also said on stderr."""
    from sync import BundleStore

    if not Path(args.store).is_dir():  # BundleStore() would create an empty store
        raise ToolsError(f"bundle store not found: {args.store}")
    st = BundleStore(args.store).status(full=args.verify)
    print(json.dumps(st, indent=2))
    active = st["active"]
    if active is not None and active["state"] == "damaged":
        print(
            f"active bundle {active['id'][:12]} is DAMAGED: {active['problem']} "
            "(`nagashi bundle pull` fetches it again; meanwhile the agent starts on "
            + (
                f"the previous good bundle {st['fallbacks'][0][:12]})"
                if st["fallbacks"]
                else "it only after pulling it again from the fleet)"
            ),
            file=sys.stderr,
        )
    return 0
