"""Lazy public names of a package: ``__getattr__`` imports the module that defines a name on
first use and keeps it in the package's namespace, so that importing a package (the agent's
start-up, ``import agent.planner``) loads only what is used. Every package's ``__init__`` uses
:func:`lazy_attribute`."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, MutableMapping
from typing import Any


def lazy_attribute(
    package: str, table: Mapping[str, str], namespace: MutableMapping[str, Any], name: str
) -> Any:
    """The public ``name`` of ``package`` from the module ``table`` names for it, kept in
    ``namespace`` (the package's globals) so the next lookup is a plain one."""
    module = table.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    namespace[name] = value
    return value
