"""A run's log file: the header (argv, cwd, sandbox, marker, masked env) and our own lines."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import BinaryIO

from orchestrator.masking import mask_env
from orchestrator.proc_group.request import ExecuteRequest
from orchestrator.proc_group.sweep import MARKER_ENV


def _now_iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def log_line(log: BinaryIO, text: str) -> None:
    """Append one orchestrator line, on a line of its own even if the output did not end one."""
    log.flush()
    try:
        size = os.fstat(log.fileno()).st_size
        last = os.pread(log.fileno(), 1, size - 1) if size else b""
    except OSError:
        last = b""
    prefix = b"" if last in (b"", b"\n") else b"\n"
    log.write(prefix + f"[orchestrator] {text}\n".encode("utf-8", "backslashreplace"))
    log.flush()


def write_header(
    log: BinaryIO,
    request: ExecuteRequest,
    env: Mapping[str, str],
    marker: str,
    at: float,
    sandbox: Sequence[str] | None = None,
) -> None:
    """The run's header; ``sandbox``: the bubblewrap options it runs with (None: bare)."""
    masked = mask_env(env, request.secret_names)
    lines = [
        f"===== orchestrator run {_now_iso(at)} =====",
        f"argv: {json.dumps(list(request.argv))}",
        f"cwd: {request.cwd}",
        f"sandbox: {'off' if sandbox is None else json.dumps(list(sandbox))}",
        f"marker: {MARKER_ENV}={marker}",
        f"timeout_s: {request.timeout_s} grace_s: {request.grace_s}",
        "env:",
        *(f"  {name}={masked[name]}" for name in sorted(masked)),
        "----- output -----",
    ]
    log.write(("\n".join(lines) + "\n").encode("utf-8", "backslashreplace"))
    log.flush()


def signal_name(sig: int | None) -> str:
    if sig is None:
        return "None"
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)
