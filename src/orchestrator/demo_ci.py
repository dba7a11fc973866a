"""The forge demo's CI: a bot that judges each pull request head once and reports check ``ci``.

What a CI service does for a GitHub repository, in a thread: it reads the open pull
requests on the fake GitHub, checks out each head it has not judged yet in a scratch
clone (over the fake's git HTTP, as a CI runner clones), runs the repo's own checks
(``python ci.py``) there, and posts the check run ``ci`` with a summary and the output's
tail. Branch protection requires ``ci``, so the merge gate waits for it and sends a task
back to development with that log when it fails.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from orchestrator import proc_group
from orchestrator.forge.fake_github import FakeGitHub
from orchestrator.gitops.git import git

log = logging.getLogger(__name__)

CHECK_NAME = "ci"
# The repo's checks, as its CI runs them: the test suite, then a house rule the suite does
# not check (no TODO left in the package). A task whose tests pass can still fail here.
CI_SCRIPT = '''"""CI: the test suite, then the house rules the suite does not check."""
import pathlib
import subprocess
import sys

suite = subprocess.run(
    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], check=False
)
problems = []
for path in sorted(pathlib.Path("calc").rglob("*.py")):
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if "TODO" in line:
            problems.append(f"{path}:{number}: no TODO in the code: {line.strip()}")
for problem in problems:
    print("lint:", problem)
if suite.returncode:
    print("ci: the test suite failed")
    sys.exit(1)
if problems:
    print(f"ci: {len(problems)} lint problem(s)")
    sys.exit(1)
print("ci: tests and lint passed")
'''
# How much of the output a check run carries (GitHubForge reads the last 4000 characters).
TAIL_CHARS = 4000
RUN_TIMEOUT_S = 120.0
HEADER_END = "----- output -----\n"


@dataclass(frozen=True)
class CiRun:
    """One head judged: the pull request, its head, the conclusion and what the run said."""

    pull: int
    sha: str
    conclusion: str
    summary: str
    log_tail: str


class CiBot:
    """Judges every open pull request head of ``repo`` once, until stopped."""

    def __init__(self, fake: FakeGitHub, repo: str, workdir: Path, *, poll_s: float = 0.2) -> None:
        self.fake = fake
        self.repo = repo
        self.workdir = workdir
        self.poll_s = poll_s
        self.runs: list[CiRun] = []
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self._judged: set[str] = set()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Poll on a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="demo-ci", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the run under way."""
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(RUN_TIMEOUT_S)

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.judge_new_heads()
            except Exception as exc:  # the demo's CI must not die silently: say why
                log.exception("the demo's CI failed a round")
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.stopping.wait(self.poll_s)

    def judge_new_heads(self) -> list[CiRun]:
        """One round: each open pull request whose head is not judged yet gets check ``ci``."""
        made = []
        for number in sorted(list(self.fake.repo(self.repo).pulls)):
            pull = self.fake.pull(self.repo, number)
            if pull.issue.state != "open" or pull.head_sha in self._judged:
                continue
            run = self.judge(number, pull.head_sha)
            if run is not None:
                made.append(run)
        return made

    def judge(self, number: int, sha: str) -> CiRun | None:
        """Run the checks on ``sha`` and post the check run; None when the head could not be
        checked out (it moved meanwhile: the next round judges the new one)."""
        scratch = self.workdir / f"{number}-{sha[:12]}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        checkout = scratch / "src"
        cloned = git(["clone", "-q", self.fake.clone_url(self.repo), str(checkout)], scratch)
        if not cloned or not git(["checkout", "-q", "--detach", sha], checkout):
            return None
        self.fake.set_check_run(self.repo, sha, CHECK_NAME, status="in_progress", conclusion=None)
        outcome = proc_group.run(
            proc_group.ExecuteRequest(
                argv=[sys.executable, "ci.py"],
                cwd=checkout,
                env=_ci_env(),
                log_path=scratch / "ci.log",
                timeout_s=RUN_TIMEOUT_S,
                grace_s=1.0,
            )
        )
        text = (scratch / "ci.log").read_text(errors="replace")
        output = text.partition(HEADER_END)[2] or text
        lines = [line for line in output.splitlines() if line.strip()]
        conclusion = "success" if outcome else "failure"
        findings = [line for line in lines if line.startswith(("lint:", "ci:", "FAILED"))]
        summary = "; ".join(findings[:5]) or (lines[-1] if lines else "no output")
        tail = output[-TAIL_CHARS:]
        self.fake.set_check_run(
            self.repo,
            sha,
            CHECK_NAME,
            conclusion=conclusion,
            title=f"ci {conclusion}",
            summary=summary,
            text=tail,
        )
        self._judged.add(sha)
        run = CiRun(number, sha, conclusion, summary, tail)
        self.runs.append(run)
        log.info("ci %s on pull request #%d at %s: %s", conclusion, number, sha[:12], summary)
        return run


def _ci_env() -> dict[str, str]:
    """A CI runner's environment: no orchestrator settings, no token."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env
