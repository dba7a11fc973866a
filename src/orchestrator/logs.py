"""Logging set-up: stdlib logging, text for people, JSON lines for machines.

Records carry ``extra={"task": ..., "job": ..., "action": ...}``; both formats show them.
"""

from __future__ import annotations

import json
import logging
import sys

_EXTRA_KEYS = ("task", "job", "action", "kind")


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in _EXTRA_KEYS:
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    """Time, level, message, then the extra fields as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = " ".join(f"{k}={getattr(record, k)}" for k in _EXTRA_KEYS if hasattr(record, k))
        return f"{base} {extras}".rstrip()


def configure(fmt: str = "text", level: int = logging.INFO) -> None:
    """Send orchestrator logs to stderr in ``fmt`` (text or json)."""
    if fmt not in ("text", "json"):
        msg = f"--log-format must be text or json, not {fmt!r}"
        raise SystemExit(msg)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else TextFormatter("%(asctime)s %(levelname)s %(message)s")
    )
    root = logging.getLogger("orchestrator")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
