"""Fetch the receiver logs of this folder again from their public origin (see README.md).

    python tests/data/nmea/fetch.py [--check]

Downloads each upstream file at its commit, keeps its first lines as committed here (line
endings normalised to LF), checks the sha256 and writes it beside this script; ``--check`` only
compares. Needs network access to GitHub.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import urllib.request
from pathlib import Path

MIRROR = "https://raw.githubusercontent.com/ukyg9e5r6k7gubiekd6/gpsd/{commit}/{path}"
HERE = Path(__file__).resolve().parent

# local name: (upstream path, commit, first N lines, sha256 of the excerpt)
LOGS = {
    "ublox-neo-m8n.log": (
        "test/daemon/neo-m8n.log",
        "b2a786f550405a3316acd8ca13054343c83e4274",
        87,
        "ab8b9926ea27c56e6eade02f57969d1995a54eba37d1752518425ecfade15ce9",
    ),
    "sirfstarv-nmea.log": (
        "test/daemon/sirfstarv-nmea.log",
        "354e4df8e82840b1ab1d667e0cb2173731a9f88a",
        62,
        "62b8d7e2179211cc3e43b45b16c026e8a5065c9177a8df77520e7f921421474b",
    ),
    "mtk-3329.log": (
        "test/daemon/mtk-3329.log",
        "11a189656c22805fdab4e8c6747365060b61617d",
        35,
        "51ea193b7b30fe517fd0909fb5c5754f8f2b79616feac913f6701c8bf523d663",
    ),
    "mt3339.log": (
        "test/daemon/mt3339.log",
        "25ae43cc356b1496b8db12586d51d031bf83a8b5",
        42,
        "ddf162f1cd750b67457fc238e2d1a4efc870339790c63bfd275c959ce5f845f6",
    ),
    "septentrio-polarx2.log": (
        "test/daemon/polarx2.log",
        "36d40e179198cedcd27d12cf1debb1b8ee4f0b37",
        85,
        "1f6f7d93c25625b2106be3bd49144c0185c212884d0dc93db3d212af7beaccf4",
    ),
    "garmin-geko201.log": (
        "test/daemon/garmin-geko201.log",
        "11a189656c22805fdab4e8c6747365060b61617d",
        34,
        "f6cdc48d652d97283b259c443d91ca28b7e91e604fe33eaa0361a7bc4c7ca6ac",
    ),
}


def excerpt(raw: bytes, n_lines: int) -> bytes:
    lines = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return b"".join(line + b"\n" for line in lines[:n_lines])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare only, write nothing")
    args = ap.parse_args()
    failed = 0
    for name, (path, commit, n_lines, sha) in LOGS.items():
        url = MIRROR.format(commit=commit, path=path)
        with urllib.request.urlopen(url, timeout=30) as resp:
            data = excerpt(resp.read(), n_lines)
        got = hashlib.sha256(data).hexdigest()
        if got != sha:
            print(f"{name}: sha256 {got} differs from {sha} ({url})", file=sys.stderr)
            failed += 1
            continue
        if not args.check:
            tmp = HERE / (name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(HERE / name)
        print(f"{name}: ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
