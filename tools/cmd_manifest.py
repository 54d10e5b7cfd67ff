"""``nagashi manifest compose`` and ``nagashi manifest diff``: version manifests (GitOps)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tools.errors import ToolsError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    m = sub.add_parser("manifest", help="compose and compare version manifests")
    msub = m.add_subparsers(dest="manifest_command", metavar="ACTION")
    msub.required = True
    c = msub.add_parser(
        "compose", help="base.yaml + overlays/<area>.yaml -> composed manifest and its hash"
    )
    c.add_argument("base", help="base manifest (base.yaml)")
    c.add_argument("overlays", nargs="*", help="overlays applied in order (overlays/x.yaml)")
    c.add_argument("--out", help="also write the composed manifest to this file")
    c.add_argument("--json", action="store_true", help="print {manifest, sha256} as JSON")
    c.set_defaults(func=cmd_compose)
    d = msub.add_parser("diff", help="what changed between two manifests (files or bundles)")
    d.add_argument("a", help="manifest file or bundle directory")
    d.add_argument("b", help="manifest file or bundle directory")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_diff)


def cmd_compose(args: argparse.Namespace) -> int:
    from sync._fs import atomic_write_bytes
    from sync.manifest import compose

    composed = compose(args.base, *args.overlays)
    text = composed.to_yaml()
    if args.out:
        atomic_write_bytes(args.out, text.encode("utf-8"))
    if args.json:
        print(json.dumps({"manifest": composed.manifest, "sha256": composed.sha256}, indent=2))
    else:
        print(text, end="")
        print(f"# sha256: {composed.sha256}")
    return 0


def _load(path: str) -> dict[str, Any]:
    from sync.manifest import load_yaml

    p = Path(path)
    if p.is_dir():
        p = p / "manifest.yaml"
    if not p.is_file():
        raise ToolsError(f"no manifest at {path}")
    return load_yaml(p)


def _show(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, sort_keys=True)


def cmd_diff(args: argparse.Namespace) -> int:
    from sync.manifest import diff

    changes = diff(_load(args.a), _load(args.b))
    if args.json:
        print(
            json.dumps(
                [{"op": op, "key": k, "old": a, "new": b} for op, k, a, b in changes], indent=2
            )
        )
        return 0
    if not changes:
        print("no differences")
    for op, key, old, new in changes:
        if op == "~":
            print(f"~ {key}: {_show(old)} -> {_show(new)}")
        elif op == "+":
            print(f"+ {key}: {_show(new)}")
        else:
            print(f"- {key}: {_show(old)}")
    return 0
