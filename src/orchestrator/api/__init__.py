"""The HTTP API and the dashboard: ``create_app(settings, engine)``; `orch serve` runs it."""

from __future__ import annotations

from orchestrator.api.app import create_app

__all__ = ["create_app"]
