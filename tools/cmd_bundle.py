"""``nagashi bundle build|verify|pull|status``: bundles on the build side and the device."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tools.errors import ToolsError, check_server_url


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
    build.add_argument("--json", action="store_true")
    build.set_defaults(func=cmd_build)

    verify = bsub.add_parser("verify", help="check every file of a bundle against its manifest")
    verify.add_argument("bundle", help="bundle directory")
    verify.add_argument("--health", action="store_true", help="also run the default health check")
    verify.set_defaults(func=cmd_verify)

    pull = bsub.add_parser("pull", help="pull the area's bundle from a fleet server (device side)")
    pull.add_argument("--store", required=True, help="device bundle store directory")
    pull.add_argument("--server", required=True, help="fleet server URL")
    pull.add_argument("--area", required=True)
    pull.add_argument("--trusted-root", required=True, help="the fleet's root.json (provisioned)")
    pull.add_argument("--json", action="store_true")
    pull.set_defaults(func=cmd_pull)

    status = bsub.add_parser("status", help="current / trial / last good bundle of a store")
    status.add_argument("--store", required=True)
    status.set_defaults(func=cmd_status)


def cmd_build(args: argparse.Namespace) -> int:
    from sync import BundleInputs, build_bundle, compose

    composed = compose(args.manifest, *args.overlay)
    inputs = BundleInputs.resolve(
        composed, tiles=args.tiles, demand=args.demand, params=args.params, area=args.area
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
    from sync import Bundle, default_health_check

    bundle = Bundle(args.bundle)
    bundle.verify()
    if args.health:
        default_health_check(bundle)
    print(f"ok {bundle.bundle_id} ({len(bundle.files)} files)")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from sync import BundleStore, PullConfig, Updater

    check_server_url(args.server, "--server")
    root = Path(args.trusted_root)
    if not root.is_file():
        raise ToolsError(f"trusted root not found: {root}")
    u = Updater(BundleStore(args.store), PullConfig(args.server, args.area), root.read_bytes())
    try:
        res = u.pull()
    finally:
        u.close()
    if args.json:
        print(json.dumps(res.__dict__, indent=2))
    else:
        print(f"{res.status} {res.bundle_id} ({res.bytes_downloaded} bytes downloaded)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from sync import BundleStore

    if not Path(args.store).is_dir():  # BundleStore() would create an empty store
        raise ToolsError(f"bundle store not found: {args.store}")
    print(json.dumps(BundleStore(args.store).status(), indent=2))
    return 0
