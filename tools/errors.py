"""Errors of the command-line layer."""

from __future__ import annotations

import importlib


class ToolsError(Exception):
    """A command was used wrongly or its inputs are unusable (one line for the user)."""


#: Error roots of every package; the CLI prints these as one line, never a traceback.
_ERROR_ROOTS: tuple[tuple[str, str], ...] = (
    ("tiles.errors", "TilesError"),
    ("models.errors", "ModelsError"),
    ("safety.errors", "SafetyError"),
    ("sync.errors", "SyncError"),
    ("agent.errors", "AgentError"),
)


def known_errors() -> tuple[type[BaseException], ...]:
    """The exception types the CLI reports as one clear line."""
    found: list[type[BaseException]] = [ToolsError]
    for module_name, cls_name in _ERROR_ROOTS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        cls = getattr(module, cls_name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)
