"""Properties of the parsers that read what a user, a config or git gave us: loopback
URLs, worker ids, command strings, task keys, regression markers, git failures and the
merge gate's reading of a re-test."""

from __future__ import annotations

import ipaddress
import re
import shlex
import urllib.parse
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from orchestrator import repo_ops, self_deploy, taskdir
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.engine import recovery
from orchestrator.errors import UsageError
from orchestrator.gates import markers, merge_gate
from orchestrator.gates.merge_gate import RetestResult
from orchestrator.gitops import merge as gitmerge
from orchestrator.gitops.git import GitResult
from orchestrator.runners import loopback as loopback_module

from .core import hostile_text, patched, prop
from .props_domain import exit_codes, kinds, signals, start_errors, tests_ran

# --------------------------------------------------------------------------- loopback URLs

_HOSTS = [
    "127.0.0.1",
    "localhost",
    "LocalHost",
    "127.0.0.2",
    "127.255.255.254",
    "[::1]",
    "[0:0:0:0:0:0:0:1]",
    "[::1%25lo]",
    "[::ffff:127.0.0.1]",
    "0.0.0.0",
    "127.1",
    "2130706433",
    "0x7f000001",
    "127.0.0.1.nip.io",
    "localhost.example.com",
    "example.com",
    "10.0.0.1",
    "[::]",
    "[fe80::1]",
    "169.254.169.254",
    "ⓛocalhost",
    "127.0.0.1\u3002",
    "",
    "[::1",
    "127.0.0.1@example.com",
    "example.com#@127.0.0.1",
    "127.0.0.1:80@example.com",
]
_LOOPBACK = ["127.0.0.1", "localhost", "LocalHost", "127.0.0.2", "[::1]", "[::1%25lo]"]
_paths = st.one_of(
    st.just(""),
    st.lists(
        st.sampled_from(["/", "health", "?", "#", "@", "\\", "%2F", "..", "é", " ", "x", "?a=b"])
        | st.text(max_size=4),
        max_size=6,
    ).map(lambda parts: "/" + "".join(parts)),
)
_ports = st.one_of(
    st.just(""),
    st.integers(-1, 70000).map(lambda p: f":{p}"),
    st.sampled_from([":", ":http", ": 80", ":0x50", ":٨٠"]),
)
# Mostly URLs that are nearly right (a loopback host, one odd part), which is where a
# parser can be fooled; then anything.
_near_url = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
    st.sampled_from(["http", "HTTP", "https"]),
    # Loopback hosts, and names that only start like one.
    st.sampled_from([*_LOOPBACK, "127.0.0.1.nip.io", "localhost.example.com", "127.0.0.1.evil"]),
    _ports,
    _paths,
)
_any_url = st.builds(
    lambda scheme, userinfo, host, port, path: f"{scheme}://{userinfo}{host}{port}{path}",
    st.sampled_from(["http", "https", "HTTP", "file", "ftp", "", "javascript"]),
    st.sampled_from(["", "", "user@", "user:pw@", "127.0.0.1@", "@"]),
    st.sampled_from(_HOSTS),
    _ports,
    _paths,
)
url = st.one_of(_near_url, _near_url, _any_url, hostile_text)
_schemes = st.sampled_from([("http",), ("http", "https")])

_real_is_loopback = loopback_module._is_loopback


def _prefix_loopback() -> Any:
    """Broken: a host that starts like a loopback address is taken for one."""

    def loopback(host: str) -> bool:
        return host.startswith(("127.", "localhost")) or _real_is_loopback(host)

    return patched(loopback_module, "_is_loopback", loopback)


def _printable_ascii(text: str) -> bool:
    return all(32 < ord(c) < 127 for c in text)


@prop("runners/loopback.py parse_loopback_url", url, _schemes, broken=_prefix_loopback)
def loopback_url_never_leaves_the_machine(text: str, schemes: tuple[str, ...]) -> None:
    """Any text: a URL whose connect host is a loopback IP and which an HTTP client can
    send as it is, or a refusal with a reason; never another host, never an exception."""
    parsed, why = loopback_module.parse_loopback_url(text, schemes=schemes)
    if parsed is None:
        assert why.startswith("refused URL"), why
        return
    assert why == ""
    try:
        connect = ipaddress.ip_address(parsed.host)
    except ValueError:
        raise AssertionError(f"{text!r}: connects to {parsed.host!r}, not an IP") from None
    assert connect.is_loopback, (text, parsed)
    assert parsed.scheme in schemes
    assert 0 <= parsed.port <= 65535
    parts = urllib.parse.urlsplit(text)
    assert "@" not in parts.netloc
    named = (parts.hostname or "").lower()
    assert named == "localhost" or ipaddress.ip_address(named) == connect, (text, parsed)
    # What http.client puts on the wire: the request target and the Host header.
    assert parsed.target.startswith("/")
    assert _printable_ascii(parsed.target), parsed.target
    assert _printable_ascii(parsed.host_header), parsed.host_header


# --------------------------------------------------------------------------- worker ids

_real_parse_worker_id = recovery.parse_worker_id


def _split_on_colons() -> Any:
    """Broken: splits the id on every ':', so a host with a colon is misread."""

    def parse(worker_id: str) -> tuple[str, int | None]:
        host, pid, *_ = [*worker_id.split(":"), "", ""]
        return host, int(pid) if pid.isdigit() else None

    return patched(recovery, "parse_worker_id", parse)


@prop(
    "engine/recovery.py parse_worker_id",
    hostile_text | st.sampled_from(["h:1:2", "::", ":"]),
    st.text(),
    st.integers(0, 2**22),
    st.floats(0, 1e11),
    broken=_split_on_colons,
)
def worker_id_round_trips(text: str, host: str, pid: int, started: float) -> None:
    """Any text: (host, pid or None), never an exception; a made id reads back as made."""
    got_host, got_pid = recovery.parse_worker_id(text)
    assert isinstance(got_host, str)
    assert got_pid is None or isinstance(got_pid, int)
    made = recovery.make_worker_id(host, pid, started)
    assert recovery.parse_worker_id(made) == (host, pid), made


# --------------------------------------------------------------------------- commands

_real_split_command = repo_ops.split_command


def _whitespace_split() -> Any:
    """Broken: splits on whitespace, ignoring quotes."""

    def split(value: str | None, option: str) -> list[str] | None:
        return None if value is None else value.split()

    return patched(repo_ops, "split_command", split)


@prop(
    "repo_ops.py split_command",
    st.none() | hostile_text,
    st.lists(hostile_text, max_size=5),
    broken=_whitespace_split,
)
def split_command_round_trips(value: str | None, argv: list[str]) -> None:
    """A string is argv (None stays None, blank is []) or a UsageError; an argv quoted with
    shlex.join splits back to itself."""
    assert repo_ops.split_command(shlex.join(argv), "--test-cmd") == argv
    try:
        got = repo_ops.split_command(value, "--test-cmd")
    except UsageError as exc:
        refused = str(exc)
    else:
        if value is None:
            assert got is None
        else:
            assert isinstance(got, list)
            assert repo_ops.split_command(shlex.join(got), "--test-cmd") == got
        return
    assert "--test-cmd: cannot split" in refused


# --------------------------------------------------------------------------- task keys

_real_valid_key = taskdir.valid_key


def _unanchored_key() -> Any:
    """Broken: a key only has to start like one."""

    def valid(key: str) -> bool:
        return re.match(r"[A-Z][A-Z0-9]*-[1-9][0-9]*", key) is not None

    return patched(taskdir, "valid_key", valid)


task_key = st.one_of(
    st.builds(
        lambda prefix, n, tail: f"{prefix}-{n}{tail}",
        st.from_regex(r"[A-Z][A-Z0-9]{0,3}", fullmatch=True) | st.sampled_from(["demo", "", "A/"]),
        st.integers(1, 999_999_999) | st.sampled_from([0, -1, 10**9, 10**10]),
        st.sampled_from(["", "\n", "/../x", "/..", " ", ".md"]),
    ),
    hostile_text,
)


@prop("taskdir.py valid_key / task_dir", task_key, broken=_unanchored_key)
def task_key_names_one_folder_under_the_root(key: str) -> None:
    """A task key names exactly one folder directly under the tasks root, or is refused."""
    root = Path("/orch/tasks")
    try:
        folder = taskdir.task_dir(root, key)
    except ValueError:
        assert not taskdir.valid_key(key)
        return
    assert (folder.parent, folder.name) == (root, key), folder
    prefix, _, number = key.partition("-")
    assert re.fullmatch(r"[A-Z][A-Z0-9]*", prefix), key
    assert re.fullmatch(r"[1-9][0-9]*", number), key


# --------------------------------------------------------------------------- markers

_marker_item = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "task": st.sampled_from(["DEMO-1", ""]) | st.text(max_size=5) | st.integers(),
            "symbol": st.sampled_from(["def keep", ""]) | st.text(max_size=5) | st.none(),
            "path": st.sampled_from(["app.py", "../../etc/passwd", ""]) | st.text(max_size=5),
        },
    ),
    st.none(),
    st.text(max_size=5),
    st.integers(),
    st.lists(st.text(max_size=3), max_size=2),
)
_raw_markers = st.one_of(
    st.lists(_marker_item, max_size=5),
    st.sampled_from([None, "", 0, False, {}, "markers", 1, True, {"task": "x"}]),
)
markers_options = st.one_of(
    st.just({}),
    _raw_markers.map(lambda raw: {"regression_markers": raw, "coverage_threshold": 80}),
)

_real_parse_markers = markers.parse_markers


def _drops_malformed() -> Any:
    """Broken: a malformed marker is skipped silently instead of reported."""

    def parse(options: Any) -> tuple[list[markers.Marker], list[str]]:
        found, problems = _real_parse_markers(options)
        return found, [p for p in problems if "needs task, symbol and path" not in p]

    return patched(markers, "parse_markers", parse)


def _is_marker(item: object) -> bool:
    return isinstance(item, dict) and all(
        isinstance(item.get(k), str) and item.get(k) for k in ("task", "symbol", "path")
    )


@prop("gates/markers.py parse_markers", markers_options, broken=_drops_malformed)
def markers_are_read_or_reported(options: dict[str, Any]) -> None:
    """Every marker item becomes a marker or a reported problem; a value that is not a
    list (and not absent) is reported, never read as "no markers"."""
    found, problems = markers.parse_markers(options)
    raw = options.get("regression_markers")
    if raw is None:
        assert (found, problems) == ([], [])
        return
    if not isinstance(raw, list):
        assert found == []
        assert len(problems) == 1, (raw, problems)
        return
    good = [item for item in raw if _is_marker(item)]
    assert [(m.task, m.symbol, m.path) for m in found] == [
        (g["task"], g["symbol"], g["path"]) for g in good
    ]
    assert len(problems) == len(raw) - len(good), problems


# --------------------------------------------------------------------------- git failures

_FRAGMENTS = [
    "fatal: Unable to create '/r/.git/index.lock': File exists.",
    "error: cannot lock ref 'refs/heads/main': is at 1 but expected 2",
    ".lock",
    "File exists",
    "Unable to create",
    "CONFLICT (content): Merge conflict in a.py",
    "git timed out after 60s",
    "timed out",
    "fatal: not a git repository",
]
git_text = st.lists(st.sampled_from(_FRAGMENTS) | st.text(max_size=10), max_size=4).map(" ".join)

_real_classify_git = gitmerge.classify_git_failure


def _timeout_from_text() -> Any:
    """Broken: believes a "timed out" line instead of whether our timeout fired."""

    def classify(res: GitResult) -> Any:
        if "timed out" in res.stderr:
            return "timeout"
        return _real_classify_git(res)

    return patched(gitmerge, "classify_git_failure", classify)


@prop(
    "gitops/merge.py classify_git_failure",
    st.integers(-1, 255),
    git_text,
    git_text,
    st.booleans(),
    broken=_timeout_from_text,
)
def git_failure_class_is_earned(code: int, stdout: str, stderr: str, timed_out: bool) -> None:
    """``timeout`` exactly when our timeout fired; ``lock-busy`` only when git named a lock."""
    res = GitResult(("git", "x"), code, stdout, stderr, timed_out=timed_out)
    kind = gitmerge.classify_git_failure(res)
    assert kind in ("timeout", "lock-busy", "other")
    assert (kind == "timeout") == timed_out
    text = f"{stderr}\n{stdout}"
    if kind == "lock-busy":
        assert "cannot lock ref" in text or (
            ".lock" in text and ("File exists" in text or "Unable to create" in text)
        )
    elif not timed_out:
        assert "cannot lock ref" not in text


# --------------------------------------------------------------------------- re-tests

_real_classify_retest = merge_gate.classify_retest_failure


def _everything_else_is_red() -> Any:
    """Broken: any re-test that did not time out or find a lock is the code's fault."""

    def classify(result: RetestResult) -> Any:
        kind = _real_classify_retest(result)
        return "red" if kind == "other" else kind

    return patched(merge_gate, "classify_retest_failure", classify)


mappings = st.one_of(
    st.builds(
        lambda code, kind, timed_out, signal, cancelled, error, ran, coll: (
            self_deploy.map_exit_code_to_status(
                code,
                kind=kind,
                timed_out=timed_out,
                signal=signal,
                cancelled=cancelled,
                start_error=error,
                tests_ran=ran,
                collection_failed=coll,
            )
        ),
        exit_codes,
        kinds,
        st.booleans(),
        signals,
        st.booleans(),
        start_errors,
        tests_ran,
        st.booleans(),
    ),
    st.builds(
        lambda kind: self_deploy.ExitMapping(
            self_deploy.ExitStatus.TOOL_ERROR, kind.value, [f"{kind.value}"]
        ),
        st.sampled_from([k for k in OutcomeKind if k.is_tool_error]),
    ),
)


@prop("gates/merge_gate.py classify_retest_failure", mappings, broken=_everything_else_is_red)
def retest_is_red_only_when_the_suite_ran(mapping: self_deploy.ExitMapping) -> None:
    """``red`` (roll back: the code's fault) only for a suite that really ran; a tool error
    is timeout, lock-busy or other (defer), never red."""
    result = RetestResult(
        passed=False,
        mapping=mapping,
        counts=None,
        argv=["pytest"],
        log_path=Path("/nonexistent/retest.log"),
        duration_s=0.0,
        reasons=[],
    )
    kind = merge_gate.classify_retest_failure(result)
    assert (kind == "red") == (mapping.outcome is OutcomeKind.COMPLETED), (kind, mapping)
    assert (kind == "timeout") == (mapping.outcome is OutcomeKind.TIMEOUT)
    assert (kind == "lock-busy") == (mapping.outcome is OutcomeKind.LOCK_BUSY)
