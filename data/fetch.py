#!/usr/bin/env python3
"""Check, or fetch again from their public origins, the real data files in this folder.

    python data/fetch.py --check     # every file present with the sha256 in sources.json
    python data/fetch.py             # download what is missing or wrong, check, then place it

Each file comes from a public GitHub repository at a fixed commit (``sources.json``). A download
is written to a temporary file, checked against its sha256 and only then moved into place, so a
failed or tampered download leaves nothing behind. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
RAW = "https://raw.githubusercontent.com/{repo}/{commit}/{source_path}"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sources() -> list[dict[str, str]]:
    files: list[dict[str, str]] = json.loads((HERE / "sources.json").read_text())["files"]
    return files


def check() -> list[str]:
    """The problems with the local copies (empty: all present and intact)."""
    problems = []
    for s in sources():
        path = HERE / s["path"]
        if not path.is_file():
            problems.append(f"{s['path']}: missing")
        elif sha256(path) != s["sha256"]:
            problems.append(f"{s['path']}: sha256 differs from sources.json")
    return problems


def fetch(s: dict[str, str]) -> None:
    url = RAW.format(**s)
    dest = HERE / s["path"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".fetch-")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as r:
            while block := r.read(1 << 20):
                out.write(block)
        got = sha256(Path(tmp))
        if got != s["sha256"]:
            raise RuntimeError(f"{url}: sha256 {got}, expected {s['sha256']}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only check the local copies")
    args = p.parse_args(argv)
    if not args.check:
        bad = {line.split(":")[0] for line in check()}
        for s in sources():
            if s["path"] in bad:
                print(f"fetching {s['path']} from {s['repo']}@{s['commit'][:7]}", file=sys.stderr)
                try:
                    fetch(s)
                except (OSError, RuntimeError) as e:
                    print(f"fetch: {s['path']}: {e}", file=sys.stderr)
                    return 2
    problems = check()
    for line in problems:
        print(f"data: {line}", file=sys.stderr)
    if not problems:
        print(f"data: {len(sources())} files present, every sha256 as in sources.json")
    return 2 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
