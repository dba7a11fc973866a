"""A task's folder: ``00-task.md``, artifacts, attached patches and ``runs/`` logs.

Files are written whole or not at all (a temp file, then an atomic rename), so a crash or
a full disk never leaves a half-written artifact for a gate to read.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from orchestrator.domain import artifacts as A

# Artifacts larger than this are not read whole: a gate gets a FAIL with a reason instead.
MAX_ARTIFACT_BYTES = 1_000_000

_KEY_RE = re.compile(r"^[A-Z][A-Z0-9]{0,15}-[1-9][0-9]{0,8}$")


def valid_key(key: str) -> bool:
    """Whether ``key`` has the shape of a task key, e.g. ``DEMO-7``."""
    return bool(_KEY_RE.match(key))


def task_dir(tasks_root: Path, key: str) -> Path:
    """The folder of task ``key``; the key is checked so no path escapes the root."""
    if not valid_key(key):
        msg = f"not a task key: {key!r}"
        raise ValueError(msg)
    return tasks_root / key


def write_atomic(path: Path, data: str | bytes, *, durable: bool = True) -> None:
    """Write ``path`` whole or not at all; ``durable`` also survives a power cut (fsync)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_task_md(key: str, repo: str, title: str, body: str) -> str:
    """The text of ``00-task.md``."""
    text = f"## {title}\n\n{body}".rstrip() + "\n"
    return A.render_artifact(A.TASK, {"task": key, "repo": repo}, text)


def read_artifact(folder: Path, name: str) -> str | None:
    """An artifact's text, or None when it is missing. Oversized files are refused."""
    if not A.ARTIFACT_NAME_RE.match(name):
        msg = f"not an artifact name: {name!r}"
        raise ValueError(msg)
    path = folder / name
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size > MAX_ARTIFACT_BYTES:
        # A gate reads this as a missing key: fail closed, with the reason in the text.
        return f"artifact too large: {size} bytes (limit {MAX_ARTIFACT_BYTES})"
    return path.read_bytes().decode("utf-8", errors="replace")


def patches_dir(folder: Path) -> Path:
    """Where patches attached with ``--patch`` are kept, numbered in order."""
    return folder / "patches"


def add_patch(folder: Path, content: bytes) -> Path:
    """Keep a new patch; the newest one is what the next developer attempt applies."""
    pdir = patches_dir(folder)
    pdir.mkdir(parents=True, exist_ok=True)
    n = len(list(pdir.glob("*.patch"))) + 1
    path = pdir / f"{n:03d}.patch"
    write_atomic(path, content)
    return path


def patch_for_attempt(folder: Path, attempt: int) -> Path | None:
    """The patch development attempt ``attempt`` applies: the n-th attached, else the newest.

    Patches attached up front stand for a developer's successive attempts; one attached by
    `orch task retry --patch` is the newest, and so the one the retry applies.
    """
    found = sorted(patches_dir(folder).glob("*.patch"))
    if not found:
        return None
    return found[attempt - 1] if 0 < attempt <= len(found) else found[-1]


def list_artifacts(folder: Path) -> list[str]:
    """The artifact files present in a task folder, in order."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if A.ARTIFACT_NAME_RE.match(p.name))


def run_log_path(folder: Path, job_number: int, stage: str, agent: str) -> Path:
    """``runs/<n>-<stage>-<agent>.log`` for a job."""
    safe_agent = re.sub(r"[^a-z0-9-]", "_", agent.lower())[:40]
    return folder / "runs" / f"{job_number}-{stage}-{safe_agent}.log"
