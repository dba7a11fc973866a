"""One suite run: a request in, a judged run out (tox's ``ExecuteRequest`` → ``Outcome``).

``run_suite`` is the only code that runs a repo's test suite (the test-runner, the merge
gate's re-test, the coverage gate) or another command in a task's worktree (staging,
deploy, coverage.py's own probe and report), and the one place such a run is wrapped in
the sandbox. A pytest run gets its JUnit XML evidence in the request's evidence folder;
counts and test IDs come from that file, never from scraping output, and any doubt (no
evidence, a tool error, "exit 0 but the JUnit XML shows failures") is not a pass.

The pieces that decide are pure and tested on their own: ``is_pytest_command``,
``with_pytest_evidence`` and ``suite_argv`` (the argv), ``read_junit`` (the evidence) and
``judge_suite`` (the outcome).
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import proc_group, sandbox
from orchestrator.config import Settings
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.private_files import private_dir
from orchestrator.runners import baseline as bl
from orchestrator.self_deploy import ExitMapping, ExitStatus, map_outcome

# The suite a repo runs when it names no test command.
DEFAULT_COMMAND: tuple[str, ...] = (sys.executable, "-m", "pytest", "-q")
# A JUnit file larger than this is not parsed: no evidence, so no PASS.
_MAX_JUNIT_BYTES = 50_000_000
# pytest's junitxml plugin writes a collection error as a testcase with this error message.
_COLLECTION_FAILURE = "collection failure"
_PYTEST_NAMES = frozenset({"pytest", "py.test"})


# --------------------------------------------------------------------------- argv (pure)


def is_pytest_command(argv: Sequence[str]) -> bool:
    """Whether ``argv`` runs pytest: a ``pytest`` executable, or ``-m pytest``."""
    for i, arg in enumerate(argv):
        if Path(arg).name in _PYTEST_NAMES or arg == "-mpytest":
            return True
        if arg == "-m" and i + 1 < len(argv) and argv[i + 1] == "pytest":
            return True
    return False


def with_pytest_evidence(argv: Sequence[str], junit_path: Path) -> list[str]:
    """``argv`` plus ``--junitxml`` (the evidence) and ``-p no:cacheprovider``.

    Our options go last (a later ``--junitxml`` wins over the repo's own addopts) but
    before a ``--``, after which pytest reads everything as a path.
    """
    extra = [f"--junitxml={junit_path}"]
    has_no_cache = any(
        a == "-pno:cacheprovider"
        or (a == "-p" and i + 1 < len(argv) and argv[i + 1] == "no:cacheprovider")
        for i, a in enumerate(argv)
    )
    if not has_no_cache:
        # The cache would write .pytest_cache into the worktree and dirty the branch.
        extra += ["-p", "no:cacheprovider"]
    args = list(argv)
    cut = args.index("--") if "--" in args else len(args)
    return [*args[:cut], *extra, *args[cut:]]


def suite_argv(argv: Sequence[str], junit: Path | None, wrapper: Sequence[str] = ()) -> list[str]:
    """What runs: ``wrapper`` (e.g. ``coverage run``), then ``argv`` with the JUnit evidence
    options when ``junit`` is given."""
    command = with_pytest_evidence(argv, junit) if junit is not None else list(argv)
    return [*wrapper, *command]


# --------------------------------------------------------------------------- JUnit evidence


@dataclass(frozen=True)
class JUnitCounts:
    """Test counts read from a JUnit XML file, one bucket per testcase element."""

    passed: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    total: int = 0
    collection_errors: int = 0

    @property
    def failed(self) -> int:
        """Failures and errors: the ``failed:`` verdict key."""
        return self.failures + self.errors

    @property
    def tests_ran(self) -> int:
        """Tests that really ran: not skipped, not a collection error."""
        return self.total - self.skipped - self.collection_errors

    def as_dict(self) -> dict[str, int]:
        """The counts as a RunnerResult reports them."""
        return {
            "passed": self.passed,
            "failed": self.failed,
            "failures": self.failures,
            "errors": self.errors,
            "skipped": self.skipped,
            "total": self.total,
        }


def read_junit(path: Path) -> tuple[JUnitCounts | None, str]:
    """(counts, "") from pytest's JUnit XML, or (None, why there is no evidence)."""
    try:
        size = path.stat().st_size
    except OSError:
        return None, f"no JUnit XML was written ({path})"
    if size > _MAX_JUNIT_BYTES:
        return None, f"JUnit XML {path} is too large to read ({size} bytes)"
    try:
        # The file is written by the suite under test, which runs arbitrary code anyway;
        # ElementTree resolves no external entities and expat bounds entity expansion.
        root = ET.parse(path).getroot()  # noqa: S314
    except (ET.ParseError, OSError, LookupError, ValueError) as exc:
        # LookupError, ValueError (UnicodeError among them): an XML declaration naming an
        # encoding expat cannot read (unknown, multi-byte, or not a text codec at all).
        return None, f"JUnit XML {path} cannot be read: {exc}"
    passed = failures = errors = skipped = total = collection = 0
    for case in root.iter("testcase"):
        total += 1
        tags = {child.tag for child in case}
        # A test that failed and then errored in teardown is two testcase elements in
        # pytest's output; one element lands in one bucket.
        if "failure" in tags:
            failures += 1
        elif "error" in tags:
            errors += 1
            if any(e.get("message") == _COLLECTION_FAILURE for e in case.iter("error")):
                collection += 1
        elif "skipped" in tags:
            skipped += 1
        else:
            passed += 1
    return JUnitCounts(passed, failures, errors, skipped, total, collection), ""


# --------------------------------------------------------------------------- outcome (pure)


@dataclass(frozen=True)
class SuiteJudgement:
    """How a run ended, judged: the exit mapping, whether it passed, and why."""

    mapping: ExitMapping
    passed: bool
    reasons: list[str]


def judge_suite(
    process: proc_group.Outcome,
    *,
    pytest: bool,
    counts: JUnitCounts | None = None,
    no_evidence: str = "",
) -> SuiteJudgement:
    """Judge a finished run: pytest by its exit code *and* its JUnit ``counts`` (None: no
    evidence, for the reason ``no_evidence``), any other command by its exit code.

    Exit 0 with failures in the JUnit XML is not a pass, nor is a pytest run without
    evidence (``map_outcome`` makes that a FAIL).
    """
    if not pytest:
        mapping = map_outcome(process, kind="command")
        ok = mapping.outcome is OutcomeKind.COMPLETED and mapping.status is ExitStatus.PASS
        return SuiteJudgement(mapping, ok, list(mapping.reasons))
    mapping = map_outcome(
        process,
        kind="pytest",
        tests_ran=None if counts is None else counts.tests_ran,
        collection_failed=counts is not None and counts.collection_errors > 0,
    )
    reasons = list(mapping.reasons)
    if counts is None and process.start_error is None and no_evidence:
        reasons.append(no_evidence)
    ok = mapping.outcome is OutcomeKind.COMPLETED and mapping.status is ExitStatus.PASS
    if counts is not None and counts.failed:
        if ok:
            reasons.append(f"exit code 0, but the JUnit XML shows {counts.failed} failed")
        ok = False
    return SuiteJudgement(mapping, ok, reasons)


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class SuiteSandbox:
    """The sandbox a run goes into (see ``orchestrator.sandbox.for_job``)."""

    repo_path: Path  # the repo's clone, hidden from the suite
    kind: str = "suite"
    options: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class SuiteRequest:
    """What to run, where, for how long, and where its log and evidence go."""

    argv: Sequence[str]
    worktree: Path
    timeout_s: float
    log_path: Path
    # The one folder besides the worktree the run may write: its JUnit XML, coverage data.
    evidence_dir: Path
    env: Mapping[str, str]
    settings: Settings  # the kill policy (grace, tree kill) and the sandbox's settings
    sandbox: SuiteSandbox | None = None  # None: a bare run (unit tests of runners)
    marker: str | None = None
    cancel: threading.Event | None = None
    on_start: Callable[[int, int], None] | None = None
    # Put before ``argv`` (``coverage run ...``); the evidence options go into ``argv``.
    wrapper: Sequence[str] = ()
    # Read JUnit evidence? None: when ``argv`` runs pytest.
    pytest: bool | None = None
    junit_name: str = "junit.xml"
    sweep_on_exit: bool = True
    secret_names: frozenset[str] = frozenset()  # more env names the log's header masks


@dataclass(frozen=True)
class SuiteRun:
    """What a suite run did, judged. True when it passed."""

    argv: list[str]  # as run, evidence options included
    process: proc_group.Outcome
    mapping: ExitMapping
    passed: bool
    reasons: list[str]
    pytest: bool
    junit: Path | None = None  # where the evidence was asked for (pytest runs)
    counts: JUnitCounts | None = None  # None: no evidence (or not pytest)
    # {test ID: outcome} from the same evidence, for the baseline and the tree's record.
    outcomes: Mapping[str, str] | None = None

    def __bool__(self) -> bool:
        return self.passed

    @property
    def kind(self) -> OutcomeKind:
        """How the run ended: completed, or which tool error."""
        return self.mapping.outcome

    @property
    def passed_tests(self) -> list[str] | None:
        """The IDs of the tests that passed (sorted); None without evidence."""
        return bl.passed_ids(self.outcomes) if self.outcomes is not None else None

    @property
    def failed_tests(self) -> list[str] | None:
        """The IDs of the tests that failed or errored (sorted); None without evidence."""
        if self.outcomes is None:
            return None
        return sorted(t for t, o in self.outcomes.items() if o in (bl.FAILED, bl.ERROR))


def run_suite(request: SuiteRequest) -> SuiteRun:
    """Run ``request.argv`` in the worktree through proc_group, inside the sandbox (fail
    closed: a sandbox that cannot start is a run that did not), and judge it."""
    pytest = is_pytest_command(request.argv) if request.pytest is None else request.pytest
    junit: Path | None = None
    if pytest:
        junit = request.evidence_dir / request.junit_name
        private_dir(junit.parent)
        # A file left by an earlier attempt must never be read as this run's evidence.
        junit.unlink(missing_ok=True)
    argv = suite_argv(request.argv, junit, request.wrapper)
    process = _execute(request, argv)
    counts: JUnitCounts | None = None
    why = ""
    outcomes: dict[str, str] | None = None
    if junit is not None:
        counts, why = read_junit(junit)
        if counts is not None:
            outcomes = bl.read_outcomes(junit)
    judged = judge_suite(process, pytest=pytest, counts=counts, no_evidence=why)
    return SuiteRun(
        argv=argv,
        process=process,
        mapping=judged.mapping,
        passed=judged.passed,
        reasons=judged.reasons,
        pytest=pytest,
        junit=junit,
        counts=counts,
        outcomes=outcomes,
    )


def _execute(request: SuiteRequest, argv: list[str]) -> proc_group.Outcome:
    settings = request.settings
    execute = proc_group.ExecuteRequest(
        argv=argv,
        cwd=Path(request.worktree),
        env=dict(request.env),
        log_path=request.log_path,
        timeout_s=request.timeout_s,
        grace_s=settings.kill_grace_s,
        marker=request.marker,
        secret_names=request.secret_names,
    )
    if request.sandbox is not None:
        private_dir(request.evidence_dir)
        try:
            box = sandbox.for_job(
                settings,
                kind=request.sandbox.kind,
                repo_path=request.sandbox.repo_path,
                argv=argv,
                writable=[Path(request.worktree), request.evidence_dir],
                env_path=request.env.get("PATH"),
                options=request.sandbox.options,
            )
        except sandbox.SandboxUnavailable as exc:
            return proc_group.refuse(execute, f"sandbox: {exc}")
        execute = dataclasses.replace(execute, sandbox=box)
    return proc_group.run(
        execute,
        cancel=request.cancel,
        on_start=request.on_start,
        tree_kill=settings.subprocess_tree_kill_enabled,
        sweep_on_exit=request.sweep_on_exit,
    )
