"""The planner's error (an ``AgentError``: the caller keeps the previous recommendation or
falls back to following the road)."""

from __future__ import annotations

from agent.errors import AgentError


class PlannerError(AgentError):
    """The planner cannot plan from these inputs (start link unknown, demand for another
    network): keep the previous recommendation or tell the driver to follow the road."""
