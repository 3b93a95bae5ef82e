"""Routing: which path (prompt, rag, adapter, combined) a request takes, and why."""

from serve.routing.router import AUTO, EXPLICIT, Decision, Router, RouteRequest

__all__ = ["AUTO", "EXPLICIT", "Decision", "RouteRequest", "Router"]
