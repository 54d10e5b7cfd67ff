"""Where the trip logs are: an agent's data folder stands for its ``trips/`` folder.

``nagashi agent run --data-dir D`` (and ``nagashi demo``) writes its trip logs to ``D/trips/``
beside the outbox; an engineer who passes ``D`` itself to ``replay``, ``export`` or ``report``
means the logs in it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from agent.triplog import log_files

TRIPS_DIR = "trips"


def trip_log_paths(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
) -> list[Path]:
    """``paths`` with every agent data folder (no trip log in it, a ``trips/`` folder beside
    its outbox) replaced by that ``trips/`` folder; files and other folders as given."""
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir() and (p / TRIPS_DIR).is_dir() and not log_files(p):
            p = p / TRIPS_DIR
        out.append(p)
    return out
