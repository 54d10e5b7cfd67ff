"""Output staging: outputs are written beside their final path, then renamed into place.

A staged output is ``.<stem>.tmp-<token><suffix>`` in the final path's directory (same file
system, so the rename is atomic; the suffix is kept for tools that look at ``.sqlite``). A run
that dies leaves only such names, which the next run removes and never takes as complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from tools.pipeline.errors import PipelineError
from tools.pipeline.spec import PipelineSpec, StepSpec

log = logging.getLogger(__name__)

TMP_MARK = ".tmp-"
OLD_MARK = ".old-"


def staging_path(final: Path, token: str) -> Path:
    """A sibling of ``final`` keeping its suffix (tools that look at ``.sqlite`` still see it)."""
    return final.with_name(f".{final.stem}{TMP_MARK}{token}{final.suffix}")


def remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)


def fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clean_stale(spec: PipelineSpec) -> None:
    """Remove temporaries a crashed run left beside outputs (never taken as complete)."""
    for s in spec.steps:
        for final in s.outputs.values():
            if not final.parent.is_dir():
                continue
            for p in final.parent.iterdir():
                n = p.name
                if n.startswith(f".{final.stem}{TMP_MARK}") or n.startswith(
                    f".{final.name}{OLD_MARK}"
                ):
                    log.info("removing stale temporary %s", p)
                    remove(p)
    scratch = spec.workdir / ".scratch"
    if scratch.is_dir():
        shutil.rmtree(scratch)


def commit_outputs(step: StepSpec, staged: dict[str, Path], token: str) -> None:
    """Rename each staged output over its final path (the old one removed afterwards)."""
    for name in step.outputs:
        src = staged[name]
        if not src.exists():
            raise FileNotFoundError(f"step {step.name} did not write its output {name!r}")
    for name, final in step.outputs.items():
        src = staged[name]
        old = final.with_name(f".{final.name}{OLD_MARK}{token}")
        if final.exists():
            os.rename(final, old)
        os.rename(src, final)
        fsync_dir(final.parent)
        if old.exists():
            remove(old)


LOCK_NAME = ".pipeline.lock"


@contextlib.contextmanager
def workdir_lock(workdir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``workdir`` for one run; a second run there fails at once."""
    workdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(workdir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineError(
                f"{workdir} is in use by another pipeline run (wait for it, or use --workdir)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing releases the lock
