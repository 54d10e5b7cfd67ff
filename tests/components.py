"""Real components the tests start (Chromium, gpsd, nginx, PostgreSQL, ...).

``require("chromium")`` returns the executable's path. Where it is missing, a developer's run
skips the test with the reason; under ``CI=true`` it fails it with one clear line, so CI never
goes green on a skipped real component (``.ci/run`` installs every one of them).
"""

from __future__ import annotations

import os
import shutil

import pytest

#: where .ci/aarch64-python unpacks its aarch64 CPython (``NAGASHI_ARM64_ROOT``)
ARM64_ROOT = os.environ.get("NAGASHI_ARM64_ROOT", "/opt/nagashi-arm64")

# executable names to try, and the Debian package that provides them
COMPONENTS: dict[str, tuple[tuple[str, ...], str]] = {
    "chromium": (("chromium", "chromium-browser"), "chromium"),
    "gpsd": (("gpsd",), "gpsd"),
    "gpsfake": (("gpsfake",), "gpsd-clients"),
    "nginx": (("nginx",), "nginx"),
    "postgres": (("postgres",), "postgresql"),
    "initdb": (("initdb",), "postgresql"),
    "pg_ctl": (("pg_ctl",), "postgresql"),
    # the C pass built for and run on aarch64 (tests/agent/test_kernel_c_aarch64.py)
    "aarch64-gcc": (("aarch64-linux-gnu-gcc",), "gcc-aarch64-linux-gnu"),
    "qemu-aarch64": (("qemu-aarch64", "qemu-aarch64-static"), "qemu-user"),
    # the cross compiler's C library headers: only *recommended* by gcc-aarch64-linux-gnu, so
    # ``apt-get install --no-install-recommends`` (.ci/run) leaves them out; a file, not a command
    "aarch64-libc": (("/usr/aarch64-linux-gnu/include/stdio.h",), "libc6-dev-arm64-cross"),
    # Debian's aarch64 CPython with nagashi's dependencies (numpy's aarch64 loops), run under
    # qemu: made by a script of ours, not a package (tests/agent/test_runtime.py)
    "aarch64-python": ((f"{ARM64_ROOT}/usr/bin/python3.11",), ".ci/aarch64-python"),
}
SEARCH_DIRS = ("/usr/sbin", "/sbin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def find(name: str) -> str | None:
    exes, _ = COMPONENTS[name]
    for exe in exes:
        if os.path.isabs(exe):  # a file the component installs
            if os.path.isfile(exe):
                return exe
            continue
        path = shutil.which(exe) or shutil.which(exe, path=os.pathsep.join(SEARCH_DIRS))
        if path:
            return path
    return None


def require(name: str) -> str:
    """Path of the real component ``name``; skip (developer) or fail (CI=true) without it."""
    path = find(name)
    if path is not None:
        return path
    package = COMPONENTS[name][1]
    how = f"run {package}" if package.startswith(".") else f"apt-get install -y {package}"
    reason = f"{name} not installed ({how})"
    if in_ci():
        pytest.fail(f"CI=true and a real component is missing: {reason}", pytrace=False)
    pytest.skip(reason)
