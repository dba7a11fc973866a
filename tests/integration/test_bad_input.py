"""Bad input, end to end: hostile artifacts at a gate, hostile titles through a whole run.

Artifacts: an agent leaves a report that is huge, binary, a symlink out of the task folder,
a FIFO or a directory, each holding (or pointing at) a well-formed PASS. The gate says FAIL
with a reason a person can read, never PASS; nothing reads a huge file whole (a child
process's peak RSS shows it) or blocks on a FIFO; `orch task show`, the API and the
dashboard stay bounded and show what the gate saw.

Titles and bodies: shell metacharacters, template placeholders, path traversal, markup and
unicode, filed through the CLI and the API and run to done by ``command:`` agents (given
every template field), the ``patch`` developer and an LLM backend. No shell sees them, no
path or branch is made of them (the key names those), and every reader gives them back as
they were filed. The built-in refusals (too long, two lines, control characters, NUL) are
one clear error and write nothing.

The SQLite or PostgreSQL database comes from the ``migrated_db_url`` fixture, as everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import markupsafe
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from orchestrator import taskdir
from orchestrator.agents import aider, claude, codex, prompts
from orchestrator.agents.common import PlanRequest
from orchestrator.agents.registry import TEMPLATE_FIELDS
from orchestrator.api import create_app
from orchestrator.cli import app as cli_app
from orchestrator.config import load_settings
from orchestrator.domain import artifacts as A
from orchestrator.domain.stages import Stage
from orchestrator.store import queries

try:
    from test_engine import STAGES, Harness
except ImportError:  # imported as tests.integration.test_bad_input
    from tests.integration.test_engine import STAGES, Harness

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    # A gate that blocks on a FIFO hangs the run: fail the test, not the suite.
    pytest.mark.timeout(300),
]

AGENTS = Path(__file__).parent / "agents"
BAD_AGENT = AGENTS / "bad_artifact_agent.py"
ECHO_AGENT = AGENTS / "echo_agent.py"
FAKE_CLAUDE = AGENTS / "fake_claude.py"
CAP = taskdir.MAX_ARTIFACT_BYTES
HUGE_MB = 64


def git(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout


def orch(h: Harness, monkeypatch: pytest.MonkeyPatch, *args: str, code: int = 0) -> Any:
    """`orch ARGS` in-process on the harness's home and database; JSON parsed with --json."""
    monkeypatch.setenv("ORCH_HOME", str(h.settings.home))
    monkeypatch.setenv("ORCH_DATABASE_URL", h.settings.effective_database_url)
    result = CliRunner().invoke(cli_app, list(args))
    assert result.exit_code == code, (args, result.output, result.exception)
    assert "Traceback" not in result.output
    if "--json" in args and code == 0:
        return json.loads(result.stdout)
    return result


def client(h: Harness) -> TestClient:
    """A client of the API on this machine: by 127.0.0.1, with the home's token."""
    app = create_app(h.settings, h.engine)
    token = (h.settings.home / "api-token").read_text().strip()
    return TestClient(
        app,
        base_url="http://127.0.0.1",
        headers={"Authorization": f"Bearer {token}"},
        raise_server_exceptions=False,
    )


@pytest.fixture
def hb(tmp_path: Path, migrated_db_url: str, make_repo: Callable[..., Path]) -> Iterator[Harness]:
    """A harness whose developer gets one retry: a FAIL at testing rolls back once, then blocks."""
    harness = Harness(
        tmp_path,
        migrated_db_url,
        make_repo(files={"README.md": "demo\n"}),
        developer_retry_budget=1,
    )
    yield harness
    harness.stop()
    harness.engine.dispose()


# =========================================================================== artifacts

# What the gate says about each hostile 13-test-report.md ({size}: the file's size). The
# bad agent writes a 46-byte PASS front matter, then 20 bytes, then the binary bytes.
PROBLEMS = {
    "huge-head": "artifact too large ({size} bytes > {cap} bytes cap); not read",
    "huge-tail": "artifact too large ({size} bytes > {cap} bytes cap); not read",
    "nul": "not text: a NUL byte at offset 66; not read",
    "invalid-utf8": "not text: invalid UTF-8 at offset 66; not read",
    "binary-pass": "not text: a NUL byte at offset 0; not read",
    "symlink-out": "a symbolic link, not a regular file; not followed",
    "symlink-in": "a symbolic link, not a regular file; not followed",
    "fifo": "a FIFO, socket or device, not a regular file; not read",
    "directory": "a directory, not a regular file; not read",
}
# What GET /tasks/{key}/artifacts/13-test-report.md answers: a raw, bounded view of a
# regular file inside the folder (a symlink inside is resolved there), else 404.
API_STATUS = {
    "huge-head": 200,
    "huge-tail": 200,
    "nul": 200,
    "invalid-utf8": 200,
    "binary-pass": 200,
    "symlink-out": 404,
    "symlink-in": 200,
    "fifo": 404,
    "directory": 404,
}

_MEASURE = """
import json, resource, sys
from pathlib import Path
from orchestrator import taskdir
from orchestrator.api import files
folder, name = Path(sys.argv[1]), sys.argv[2]
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
before = peak()
got = taskdir.load_artifact(folder, name)   # the gate's read
note = taskdir.read_artifact(folder, name)  # the prompt's and a person's read
view = files.read_artifact(folder / name)   # the API's and the dashboard's read
print(json.dumps({"grew_kib": peak() - before, "problem": got.problem, "note": note,
                  "view_chars": len(view or "")}))
"""


def peak_rss_of_reading(folder: Path, name: str) -> dict[str, Any]:
    """Read an artifact every way the orchestrator does, in a child; how much its RSS grew."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(folder), name],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return dict(json.loads(done.stdout))


def run_until_settled(h: Harness) -> None:
    """The worker until idle, in a daemon thread: a read that blocks fails this test only."""
    runner = threading.Thread(target=h.run_until_idle, daemon=True)
    runner.start()
    h.wait_for(lambda: not runner.is_alive(), deadline_s=240)


def _bad_agent(mode: str, outside: Path) -> str:
    return (
        f"command:{sys.executable} {BAD_AGENT} {mode} {A.TEST_REPORT} {{artifact_dir}} "
        f"{outside} {HUGE_MB}"
    )


@pytest.mark.parametrize("mode", sorted(PROBLEMS))
def test_a_hostile_artifact_is_a_fail_with_its_reason(
    hb: Harness, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    h = hb
    outside = h.tmp / "outside"
    h.add_repo(testing=_bad_agent(mode, outside))
    main_before = git(h.repo_path, "rev-parse", "main")
    key = h.add_task()
    run_until_settled(h)

    report = h.folder(key) / A.TEST_REPORT
    size = report.lstat().st_size
    problem = PROBLEMS[mode].format(size=size, cap=CAP)
    reason = f"check_tests_passed: {A.TEST_REPORT}: {problem}"
    # The end state: blocked at testing after one rollback; main never moved.
    t = h.task(key)
    assert (t.stage, t.state) == ("testing", "blocked")
    assert [x.kind for x in h.history(key)] == ["create", "advance", "rollback", "advance", "block"]
    assert reason in t.reasons
    assert "developer-budget-exhausted" in [a.kind for a in h.alerts()]
    assert git(h.repo_path, "rev-parse", "main") == main_before
    jobs = h.jobs(key)
    assert [(j.stage, j.verdict) for j in jobs] == [
        ("development", "PASS"),
        ("testing", "FAIL"),
        ("development", "PASS"),
        ("testing", "FAIL"),
    ]
    for j in jobs:
        assert (j.state, j.outcome) == ("finished", "completed")
        if j.stage == "testing":
            assert reason in j.reasons, j.reasons
    # The second developer was told why, through the same bounded read (no hang on a FIFO).
    second_dev = jobs[2]
    prompt = (h.folder(key) / "runs" / f"{second_dev.id}-prompt.md").read_text()
    assert f"({A.TEST_REPORT}: {problem})" in prompt
    if mode == "symlink-out":
        assert "all green, honest" not in prompt

    # `orch task show` lists the artifact and shows the reasons, human and JSON alike.
    shown = orch(h, monkeypatch, "task", "show", key, "--json")
    assert A.TEST_REPORT in shown["artifacts"]
    assert [j["verdict"] for j in shown["jobs"] if j["stage"] == "testing"] == ["FAIL", "FAIL"]
    assert reason in shown["reasons"]
    orch(h, monkeypatch, "task", "show", key)

    # The API serves a bounded raw view, never the file a symlink points out at.
    with client(h) as c:
        r = c.get(f"/tasks/{key}/artifacts/{A.TEST_REPORT}")
        assert r.status_code == API_STATUS[mode], r.text[:300]
        assert "all green, honest" not in r.text or mode == "symlink-in"
        assert len(r.content) <= CAP + 200
        if mode.startswith("huge"):
            assert r.text.endswith(f"[cut at {CAP} of {size} bytes]\n")
        # The dashboard shows the gate's reason and none of the PASS keys it refused.
        page = c.get(f"/ui/tasks/{key}")
        assert page.status_code == 200
        assert f"the gate does not read it: {markupsafe.escape(problem)}" in page.text
        assert "<th>result</th>" not in page.text
        assert len(page.content) <= 2 * CAP + 200_000

    if mode.startswith("huge"):
        assert size > HUGE_MB * 1024 * 1024
        # Reading it every way costs a bounded amount of memory, not the file's size.
        seen = peak_rss_of_reading(h.folder(key), A.TEST_REPORT)
        assert seen["problem"] == problem
        assert seen["note"] == f"({A.TEST_REPORT}: {problem})"
        assert seen["view_chars"] <= CAP + 100
        assert seen["grew_kib"] * 1024 < size / 4, seen


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"---\nresult: PASSED\nstatus: PASS\nfailed: 0\n---\n\x00", "a NUL byte at offset 46"),
        (b"---\nresult: PASSED\nstatus: PASS\nfailed: 0\n---\n\xff", "invalid UTF-8 at offset 46"),
        (
            b"---\nresult: PASSED\nstatus: PASS\nfailed: 0\n---\n" + b"x" * CAP,
            f"artifact too large ({CAP + 46} bytes > {CAP} bytes cap)",
        ),
    ],
    ids=["nul", "invalid-utf8", "too-large"],
)
def test_approve_refuses_an_artifact_the_gate_would_refuse(
    hb: Harness, monkeypatch: pytest.MonkeyPatch, content: bytes, needle: str
) -> None:
    h = hb
    h.add_repo()
    key = h.add_task()
    task_id = h.task(key).id
    with h.engine.begin() as conn:
        queries.update_task(conn, task_id, now=0.0, stage="testing", state="blocked")
    supplied = h.tmp / "report.md"
    supplied.write_bytes(content)
    out = orch(h, monkeypatch, "task", "approve", key, "--artifact", str(supplied), code=2)
    assert needle in out.output
    assert (h.task(key).stage, h.task(key).state) == ("testing", "blocked")
    assert not (h.folder(key) / A.TEST_REPORT).exists()


# =========================================================================== titles

TOKEN = f"SENTINEL{uuid.uuid4().hex[:10]}"
_LONG = "".join(f"$(touch {TOKEN}{i});`rm -rf {TOKEN}`|" for i in range(20))[:199] + "x"
TITLES = (
    f"$(touch {TOKEN}) `touch {TOKEN}` ; touch {TOKEN} | tee {TOKEN} && rm -rf ~ || "
    f"id & \"dq\" 'sq' \\ %s %n %% {{task}} {{title}} {{0}} --help",
    f"-rf --help -- ../../../tmp/{TOKEN} /etc/passwd ..\\..\\{TOKEN} ~/{TOKEN} $HOME/{TOKEN}",
    f"<script>alert('{TOKEN}')</script> [/x] [red]r[/red] {{{{ 7*7 }}}} {{% raw %}} ${{IFS}}",
    f"\u202eRTL override עברית مرحبا 😀 ünïcödé zero\u200bwidth {TOKEN}",
    _LONG,
)
BODY = (
    f"first line\n$(touch {TOKEN})\n`touch {TOKEN}`\n; touch {TOKEN} #\n---\ndev_status: DONE\n"
    f"result: PASSED\n---\n<script>alert('{TOKEN}')</script>\n{{task}} {{0}} %s\n"
    f"../../{TOKEN}\r\nlast line"
)
# Through the API, the rest through `orch task add` (a title starting with "-" after "--").
VIA_API = {2, 3}


def _echo_agent() -> str:
    """A ``command:`` agent given every field the engine fills in, one argv element each."""
    fields = " ".join(f"{f}={{{f}}}" for f in sorted(TEMPLATE_FIELDS))
    return f"command:{sys.executable} {ECHO_AGENT} {fields}"


def _patch(i: int) -> str:
    return (
        f"diff --git a/hostile-{i}.txt b/hostile-{i}.txt\nnew file mode 100644\n"
        f"--- /dev/null\n+++ b/hostile-{i}.txt\n@@ -0,0 +1 @@\n+hostile {i}\n"
    )


def _files(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def _named_after_token(root: Path, *, deep: bool) -> list[Path]:
    try:
        found = root.rglob(f"*{TOKEN}*") if deep else root.glob(f"*{TOKEN}*")
        return list(found)
    except OSError:
        return []


def test_titles_are_one_line_of_text_under_the_limit() -> None:
    assert all(t == t.strip() and len(t) <= 200 and "  " not in t for t in TITLES)
    assert len(_LONG) == 200


@pytest.mark.parametrize("developer", ["command", "patch", "claude"])
def test_hostile_titles_run_to_done_and_reach_no_shell_and_no_path(
    tmp_path: Path,
    migrated_db_url: str,
    make_repo: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    developer: str,
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    patches = tmp_path / "patches"
    patches.mkdir()
    for i in range(len(TITLES)):
        (patches / f"{i}.patch").write_text(_patch(i))
    h = Harness(
        tmp_path,
        migrated_db_url,
        make_repo(files={"README.md": "demo\n"}),
        claude_command=f"{sys.executable} {FAKE_CLAUDE}",
    )
    try:
        dev = {"command": _echo_agent(), "patch": "patch", "claude": "claude"}[developer]
        h.add_repo(development=dev, testing=_echo_agent(), deploy_staging=_echo_agent())
        before = _files(tmp_path)
        keys = _file_all(h, monkeypatch, patches, with_patch=developer == "patch")
        h.run_until_idle()
        _check_the_run(h, keys, developer)
        _check_the_readers(h, keys, monkeypatch)
        _check_no_file_escaped(h, before, cwd)
    finally:
        h.stop()
        h.engine.dispose()


def _file_all(
    h: Harness, monkeypatch: pytest.MonkeyPatch, patches: Path, *, with_patch: bool
) -> list[str]:
    keys = []
    with client(h) as c:
        for i, title in enumerate(TITLES):
            if i in VIA_API:
                req: dict[str, Any] = {"repo": "demo", "title": title, "body": BODY}
                if with_patch:
                    req["patch"] = (patches / f"{i}.patch").read_text()
                r = c.post("/tasks", json=req)
                assert r.status_code == 201, r.text
                made = r.json()
            else:
                extra = ["--patch", str(patches / f"{i}.patch")] if with_patch else []
                args = ["task", "add", "demo", "--body", BODY, *extra, "--json", "--", title]
                made = orch(h, monkeypatch, *args)
            assert made["title"] == title
            keys.append(made["key"])
    assert keys == [f"DEMO-{n}" for n in range(1, len(TITLES) + 1)]
    return keys


def _check_the_run(h: Harness, keys: list[str], developer: str) -> None:
    repo = h.repo_path
    main_log = git(repo, "log", "--format=%B%x00", "main").split("\x00")
    for key, title in zip(keys, TITLES, strict=True):
        t = h.task(key)
        assert (t.stage, t.state) == (STAGES[-1], "done"), (key, t.reasons)
        assert t.title == title
        assert [x.kind for x in h.history(key)] == ["create", "advance", "advance", "done"]
        jobs = h.jobs(key)
        assert [(j.stage, j.outcome, j.verdict) for j in jobs] == [
            (s, "completed", "PASS") for s in STAGES
        ]
        folder = h.folder(key)
        worktree = h.settings.worktrees_dir / "demo" / key
        # Every command agent got each field as one argv element, made of the key, never
        # of the title; its cwd was the key's worktree.
        echoed = STAGES if developer == "command" else STAGES[1:]
        for job in (j for j in jobs if j.stage in echoed):
            # An agent's artifact dir is its job's own output folder, not the task folder.
            out = folder / "runs" / f"{job.id}-out"
            seen = json.loads((out / "runs" / f"echo-{job.stage}-1.json").read_text())
            values = dict(a.split("=", 1) for a in seen["argv"][1:])
            assert sorted(values) == sorted(TEMPLATE_FIELDS)
            assert values["task"] == key
            assert values["stage"] == job.stage
            assert values["worktree"] == str(worktree) == seen["cwd"]
            assert values["artifact_dir"] == str(out)
            assert values["prompt_file"] == str(folder / "runs" / f"{job.id}-prompt.md")
            assert not [a for a in seen["argv"] if TOKEN in a or title in a]
            assert seen["env"]["ORCH_TASK"] == key
            assert not [v for v in seen["env"].values() if TOKEN in v]
            assert title in Path(values["prompt_file"]).read_text()
        if developer == "claude":
            first_out = folder / "runs" / f"{jobs[0].id}-out"
            argv = json.loads((first_out / "runs" / "claude-argv-1.json").read_text())
            prompt = (folder / "runs" / f"{jobs[0].id}-prompt.md").read_bytes().decode()
            assert argv[-2:] == ["--", prompt]
            assert argv.count("--") == 1
            assert title in prompt
            assert not [a for a in argv[:-1] if TOKEN in a or title in a]
        # The commit on main carries the title as text; nothing else is named after it.
        message = next(m for m in main_log if f"Orch-Task: {key}" in m)
        assert message.strip().splitlines()[0] == f"{key}: {title}"
        if developer == "patch":
            assert f"{key}: {title} (patch 001.patch, attempt 1)" in message
        assert not worktree.exists()  # done: removed
    branches = set(git(repo, "branch", "--format=%(refname:short)").split())
    assert branches == {"main"}  # done: the task branches are deleted once on main
    listed = [line for line in git(repo, "worktree", "list", "--porcelain").splitlines()]
    assert [line for line in listed if line.startswith("worktree ")] == [f"worktree {repo}"]


def _check_the_readers(h: Harness, keys: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    listed = orch(h, monkeypatch, "task", "list", "--json")
    assert [t["title"] for t in listed] == list(TITLES)
    orch(h, monkeypatch, "task", "list")  # a title full of markup does not break the table
    with client(h) as c:
        assert [t["title"] for t in c.get("/tasks").json()] == list(TITLES)
        board = c.get("/").text
        pages = [board]
        for key, title in zip(keys, TITLES, strict=True):
            shown = orch(h, monkeypatch, "task", "show", key, "--json")
            assert (shown["title"], shown["body"]) == (title, BODY)
            human = orch(h, monkeypatch, "task", "show", key).stdout
            assert human.splitlines()[0] == f"{key} {title}  (demo)"
            api = c.get(f"/tasks/{key}").json()
            assert (api["title"], api["body"]) == (title, BODY)
            page = c.get(f"/ui/tasks/{key}").text
            pages.append(page)
            escaped = str(markupsafe.escape(title))
            assert escaped in page
            assert escaped in board
        for html in pages:
            assert "<script>alert(" not in html
        assert f"&lt;script&gt;alert(&#39;{TOKEN}&#39;)&lt;/script&gt;" in board


def _check_no_file_escaped(h: Harness, before: set[Path], cwd: Path) -> None:
    home, repo = h.settings.home, h.repo_path
    new = _files(h.tmp) - before
    assert new, "the run wrote nothing: this check would see nothing"
    stray = [p for p in new if not (p.is_relative_to(home) or p.is_relative_to(repo))]
    assert stray == []
    assert list(cwd.iterdir()) == []
    # No file named after the title anywhere a shell or a joined path would have put one.
    assert _named_after_token(h.tmp, deep=True) == []
    assert _named_after_token(Path(tempfile.gettempdir()), deep=False) == []
    assert _named_after_token(Path("/tmp"), deep=False) == []
    assert _named_after_token(Path.home(), deep=False) == []
    assert not Path("/", TOKEN).exists()


@pytest.mark.parametrize("title", TITLES, ids=[f"title{i}" for i in range(len(TITLES))])
def test_llm_planners_put_the_prompt_in_one_element_after_the_options(
    tmp_path: Path, title: str
) -> None:
    folder = tmp_path / "home" / "tasks" / "DEMO-1"
    task_md = taskdir.render_task_md("DEMO-1", "demo", title, BODY)
    prompt = prompts.render_prompt(
        "developer", Stage.DEVELOPMENT, "DEMO-1", task_md, folder, None, None
    )
    # Rendered as text: a title that looks like a template is not run as one.
    assert title in prompt
    assert BODY.replace("\r\n", "\n").split("\n")[0] in prompt
    req = PlanRequest(
        backend="claude",
        role="developer",
        stage=Stage.DEVELOPMENT,
        task_key="DEMO-1",
        prompt=prompt,
        worktree=tmp_path / "worktrees" / "demo" / "DEMO-1",
        artifact_dir=folder,
        artifact=A.DEV_REPORT,
        job_home=folder / "runs" / "1-home",
        settings=load_settings(home=tmp_path / "home"),
    )
    for plan in (claude.plan_claude(req), codex.plan_codex(req)):
        assert plan.argv[-2:] == ["--", prompt]
        assert plan.argv.count("--") == 1
        assert not [a for a in plan.argv[:-1] if TOKEN in a or title in a]
    argv = aider.plan_aider(req).argv
    assert [a for a in argv if TOKEN in a or title in a] == [f"--message={prompt}"]


REFUSED = [
    # (title, body, what `orch task add` says, what POST /tasks says)
    ("x" * 10_000, "", "at most 200 characters", "at most 200 characters"),
    ("two\nlines", "", "one line of at most 200", "title"),
    ("carriage\rreturn", "", "no control characters (found '\\r')", "title"),
    ("esc \x1b[31mred", "", "no control characters (found '\\x1b')", "control characters"),
    ("nul\x00title", "", None, "control characters"),
    ("fine", "nul\x00body", "no NUL character", "no NUL character"),
]


@pytest.mark.parametrize(
    ("title", "body", "cli_says", "api_says"),
    REFUSED,
    ids=["10k-chars", "newline", "carriage-return", "escape", "nul-title", "nul-body"],
)
def test_refused_titles_and_bodies_are_one_error_and_write_nothing(
    hb: Harness,
    monkeypatch: pytest.MonkeyPatch,
    title: str,
    body: str,
    cli_says: str | None,
    api_says: str,
) -> None:
    h = hb
    h.add_repo()
    if cli_says is not None:  # argv cannot hold a NUL: that title comes only through the API
        body_file = h.tmp / "body.md"
        body_file.write_text(body)
        args = ["task", "add", "demo", "--body-file", str(body_file), "--", title]
        out = orch(h, monkeypatch, *args, code=2)
        assert cli_says in out.output
    with client(h) as c:
        r = c.post("/tasks", json={"repo": "demo", "title": title, "body": body})
        assert r.status_code == 422, r.text
        assert api_says in r.json()["error"]
        assert c.get("/tasks").json() == []
    assert not h.settings.tasks_dir.exists() or list(h.settings.tasks_dir.iterdir()) == []
