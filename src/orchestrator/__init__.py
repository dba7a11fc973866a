"""orchestrator: takes software tasks from ticket to merged, deployed and watched."""

from __future__ import annotations

__version__ = "0.1.0"
