"""Errors of the agent layer."""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error raised by :mod:`agent`."""
