"""A task's folder: ``00-task.md``, artifacts, attached patches and ``runs/`` logs.

Files are written whole or not at all (a temp file, then an atomic rename), so a crash or
a full disk never leaves a half-written artifact for a gate to read.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.domain import artifacts as A
from orchestrator.private_files import private_dir

# The most of an artifact that is ever read. An agent can write a file of any size (a
# runaway loop, a log pasted in whole); reading it whole would cost the worker, the API and
# the dashboard that much memory, and a verdict hidden past this point is no verdict: such an
# artifact is a FAIL with the reason. Our own reports stay far below it (a runner quotes at
# most 40 lines of output). A constant for now; see ``load_artifact``.
MAX_ARTIFACT_BYTES = 1_000_000

# \Z, not $: "$" also matches before a trailing newline, and "DEMO-7\n" is not a key.
_KEY_RE = re.compile(r"^[A-Z][A-Z0-9]{0,15}-[1-9][0-9]{0,8}\Z")


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
    """Write ``path`` whole or not at all; ``durable`` also survives a power cut (fsync).

    The file is its user's alone (``mkstemp`` makes it 0600), in a folder made 0700."""
    private_dir(path.parent)
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
    """The text of ``00-task.md``: the orchestrator's keys, the title, the body quoted.

    Task text is text, never a claim or markup of ours. The artifact reader takes a
    ``key: value`` line anywhere outside a fence, and its fences are not CommonMark's (any
    line starting with three backticks or tildes opens or closes one), so no fence could
    keep a body's own claims out of it. Every body line is put in a block quote instead
    (``> ``): no quoted line reads as a key or a fence, to the reader or to CommonMark, and
    a fence the body leaves open ends with the quote. Lines are split as the reader splits
    them (``str.splitlines``: CRLF, a lone CR, U+2028 ...), so no break is left inside a
    quoted line. The title is one line, a heading, whatever it was given.
    """
    heading = " ".join(part.strip() for part in title.splitlines())
    lines = body.splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    quoted = "\n".join(f"> {line}".rstrip() for line in lines)
    text = f"## {heading}\n\n{quoted}".rstrip() + "\n"
    return A.render_artifact(A.TASK, {"task": key, "repo": repo}, text)


class RefusedFile(OSError):
    """A path that is not a regular file of its own (a symlink, a FIFO, a directory)."""


def read_bounded(path: Path, limit: int, *, follow: bool = False) -> tuple[bytes, int]:
    """At most ``limit + 1`` bytes of the regular file ``path``, and its size when opened.

    Reading one byte past ``limit`` tells a caller the file is larger than that without
    reading it all, even when it grows while we read. The open never blocks (``O_NONBLOCK``:
    a FIFO with no writer would hang the reader forever) and, unless ``follow``, never
    follows a symlink (``O_NOFOLLOW``). Anything but a regular file is a ``RefusedFile``;
    a missing one is ``FileNotFoundError``.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow:
            msg = "a symbolic link, not a regular file; not followed"
            raise RefusedFile(msg) from exc
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO, socket or device"
            msg = f"{kind}, not a regular file; not read"
            raise RefusedFile(msg)
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), st.st_size
    finally:
        os.close(fd)


@dataclass(frozen=True)
class ArtifactRead:
    """An artifact as a gate may trust it: its text, or none with the reason why."""

    text: str | None
    # Set when the file is there but is not an artifact a gate may read: the reason.
    problem: str | None = None


def decode_artifact(raw: bytes, size: int | None = None) -> ArtifactRead:
    """The text of an artifact's bytes, or the problem that keeps a gate from trusting it.

    An artifact is UTF-8 markdown. Bytes that are not (a NUL, invalid UTF-8) mean a broken
    producer or a damaged file (a crash can leave a block of zeros), and its keys could be
    damaged too, so no claim in it is read: fail closed.
    """
    size = max(size or 0, len(raw))
    if size > MAX_ARTIFACT_BYTES:
        return ArtifactRead(
            None, f"artifact too large ({size} bytes > {MAX_ARTIFACT_BYTES} bytes cap); not read"
        )
    nul = raw.find(b"\0")
    if nul >= 0:
        return ArtifactRead(None, f"not text: a NUL byte at offset {nul}; not read")
    try:
        return ArtifactRead(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return ArtifactRead(None, f"not text: invalid UTF-8 at offset {exc.start}; not read")


def load_artifact(folder: Path, name: str) -> ArtifactRead:
    """Artifact ``name`` of a task folder for a gate: missing (no text), refused, or its text.

    Refused, with the reason: a symlink (never followed, so no file outside the folder is
    read), anything but a regular file, a file over ``MAX_ARTIFACT_BYTES`` (never read
    whole), and bytes that are not UTF-8 text.
    """
    if not A.ARTIFACT_NAME_RE.fullmatch(name):
        msg = f"not an artifact name: {name!r}"
        raise ValueError(msg)
    try:
        raw, size = read_bounded(folder / name, MAX_ARTIFACT_BYTES)
    except FileNotFoundError:
        return ArtifactRead(None)
    except RefusedFile as exc:
        return ArtifactRead(None, str(exc))
    except OSError as exc:
        return ArtifactRead(None, f"cannot be read: {exc.strerror or exc}")
    return decode_artifact(raw, size)


def read_artifact(folder: Path, name: str) -> str | None:
    """An artifact's text for a person or a prompt: None when missing, a note when refused.

    Gates use ``load_artifact``, which keeps the reason apart from the text.
    """
    got = load_artifact(folder, name)
    if got.problem is not None:
        return f"({name}: {got.problem})"
    return got.text


def patches_dir(folder: Path) -> Path:
    """Where patches attached with ``--patch`` are kept, numbered in order."""
    return folder / "patches"


def add_patch(folder: Path, content: bytes) -> Path:
    """Keep a new patch; the newest one is what the next developer attempt applies."""
    pdir = private_dir(patches_dir(folder))
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
    return sorted(p.name for p in folder.iterdir() if A.ARTIFACT_NAME_RE.fullmatch(p.name))


def digest(text: str) -> str:
    """The SHA-256 of an artifact's text as it is written (UTF-8)."""
    return hashlib.sha256(text.encode()).hexdigest()


# What a person is shown for an artifact in a task folder that no job of this pipeline
# recorded (a forged report, or one left by hand): never a result.
NOT_OURS = "not written by this pipeline"
# A job's record of an artifact its agent left that is no text a gate may read (a symlink,
# a FIFO, too large, not UTF-8): it is this pipeline's, shown with the gate's reason.
REFUSED = "refused"


def record_of(texts: Mapping[str, str], refused: Iterable[str] = ()) -> dict[str, str]:
    """A job's record of its artifacts: {name: SHA-256 of the text, or ``REFUSED``}."""
    return {**{name: REFUSED for name in refused}, **{n: digest(t) for n, t in texts.items()}}


def split_artifacts(folder: Path, recorded: Mapping[str, set[str]]) -> tuple[list[str], list[str]]:
    """(ours, not ours): the artifacts present in ``folder`` that a job of the task recorded
    exactly as they are, and the rest (``NOT_OURS``). ``00-task.md`` is the task itself,
    written when it was filed, by no job: always ours."""
    ours: list[str] = []
    foreign: list[str] = []
    for name in list_artifacts(folder):
        got = load_artifact(folder, name) if name != A.TASK else None
        known = recorded.get(name, set())
        if (
            got is None
            or (got.text is not None and digest(got.text) in known)
            or (got.problem is not None and REFUSED in known)
        ):
            ours.append(name)
        else:
            foreign.append(name)
    return ours, foreign


def run_log_path(folder: Path, job_number: int, stage: str, agent: str) -> Path:
    """``runs/<n>-<stage>-<agent>.log`` for a job."""
    safe_agent = re.sub(r"[^a-z0-9-]", "_", agent.lower())[:40]
    return folder / "runs" / f"{job_number}-{stage}-{safe_agent}.log"
