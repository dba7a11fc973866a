"""The HTTP API and the dashboard: ``create_app(settings, engine)``; `orch serve` runs it.

``create_app`` is imported on first use (PEP 562): `orch serve` reads ``api.guard`` to
refuse bad options before it imports FastAPI and the app's modules (~0.4 s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.api.app import create_app as create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    """``create_app``, imported on first use."""
    if name != "create_app":
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    from orchestrator.api.app import create_app

    globals()[name] = create_app
    return create_app
