"""The generated ``docs/security.md``: its text, and the rows the attack tests give it.

Each test module that plays an attacker keeps its rows beside its tests (``ATTACKS`` of the
sandbox, ``DEFENDED`` elsewhere); ``test_security_doc.py`` renders the page from them and
fails when the committed page differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
WRITE_ENV = "ORCH_WRITE_SECURITY_DOC"


@dataclass(frozen=True)
class Attack:
    """An escape from the sandbox: what the agent tries, run bare and sandboxed."""

    id: str
    attack: str
    bare: str
    sandboxed: str


@dataclass(frozen=True)
class Defended:
    """An attack on the pipeline's word: what it got before these defences, and now."""

    attack: str
    before: str
    now: str
    test: str  # the test file that plays it


INTRO = """\
# Security: the agent is untrusted

<!-- Generated from the tests that play each attacker (tests/integration/security_doc.py);
     regenerate: ORCH_WRITE_SECURITY_DOC=1 pytest tests/integration/test_security_doc.py -->

## Threat model

Trusted: the user, their configuration (settings, `orch repo` options, the commands they
register), their clone of the repository, the orchestrator and its database. Untrusted:
every agent (an LLM may be prompt-injected, or may simply cheat) and every line of code an
agent wrote, which includes the tests, `conftest.py` and the staging script as they stand on
a task branch: the test-runner, the merge gate's re-test, the coverage gate and the staging
command run that code.

## The sandbox

Every agent process (`command:` agents and the LLM CLIs) and every suite we run on a task's
code runs under bubblewrap (`orchestrator/sandbox.py`):

- its own PID, IPC and UTS namespaces, and a user namespace where the kernel allows one;
  `--die-with-parent`: if the worker dies, so does the sandbox;
- the system read-only (`/` bound read-only), a fresh `/dev` (whose `/dev/tty` opens no
  terminal: a job in the orchestrator's session could type into the user's with
  `TIOCSTI`), its own `/proc` (the host's processes and their environments are not there)
  and a private `/tmp`;
- hidden under empty, read-only file systems: the orchestrator's home (`ORCH_HOME`: the
  database, every task folder, the logs, other tasks' workspaces), the user's clone of the
  repository, every remote of it that is a local path, the user's home (`~/.ssh`,
  `~/.aws`, `~/.config` ...), the system's runtime folder (`/run`, also `/var/run`: the
  sockets of the system's services, PostgreSQL's, whose peer authentication lets in any
  process of the database's owner, the system D-Bus, Docker's) and the user's runtime
  folder (`XDG_RUNTIME_DIR`, `/run/user/<uid>`: their SSH agent, gpg-agent and D-Bus
  session bus); a socket on the read-only system would still take connections;
- read-only again over that: what the job needs to run (the command's toolchain: the
  venv its executable lives in and the Python or Node it links to, the orchestrator's own
  Python; the folders of the job's `PATH` that lie in `/run` and in no other hidden
  place, NixOS's `/run/current-system/sw/bin`; the files that links in `/etc` reach
  through `/run`, at the path they enter it by, such as `/etc/resolv.conf` under
  systemd-resolved or in Fedora's toolbox, whose link names the host's own link in
  `/run/host`), the object store the workspace borrows from the user's clone (its
  history: that store only, whatever another folder's alternates file names), the job's
  prompt, and the
  paths the repo names with `orch repo set --sandbox-ro PATH`. Only those that lie in a
  hidden place or in `/tmp` are bound again: elsewhere (`/usr`, a venv in `/opt`) the
  read-only system shows them as they are, and each bind is a mount at every job's start.
  A place that is or holds a hidden one is never bound again, whoever names it: an
  executable in `~/bin` gets that folder, not its install prefix (the home itself, whose
  bind would show `~/.ssh` and the orchestrator's home);
- writable: the task's workspace and the job's own folders only (`runs/<job>-out`, where an
  agent writes its artifact, which the orchestrator moves into the task folder after the
  run; `runs/<job>-home`, its `HOME`; `runs/<log>.out` for a suite's JUnit XML and coverage
  data), plus `orch repo set --sandbox-rw PATH`; the workspace's own `.git` is sealed
  read-only on top of it;
- network: shared by default (agents reach their model API; suites may need loopback
  services); `ORCH_SANDBOX_NETWORK=none` cuts it for all, `agent=shared,suite=none` per kind.

Killing a job kills its namespace: bubblewrap's init is the namespace's PID 1, and when it
dies the kernel kills everything left in it, whatever a process did to get away (setsid, a
double fork, a renamed argv, a cleared environment). The `/proc` marker sweep stays as the
second line where the sandbox is off. After a sandboxed command exits by itself nothing
scans `/proc`: bubblewrap names its init (`--json-status-fd`), and once that init has exited
the kernel has already ended the rest of the namespace (it reaps the init last); when the
init cannot be seen to exit within a second, the group kill and the sweep run as before. A
command killed by signal N inside the sandbox exits 128 + N through bubblewrap; such an
exit code is read as that signal (a tool error), never as the command's own verdict.

A sandbox that fails to start is not the command's verdict. bubblewrap exits 1 with a
`bwrap: ...` line when its own setup fails (a bind it cannot make, a namespace it cannot
create), before the command ran: the test-runner once read that as "pytest exit code 1:
tests failed" and rolled the task back to development. Its `--json-status-fd` gets the
command's `exit-code` only once the setup finished and the command was started, and the
command cannot write to it: no exit code there is a start failure. The job ends
`not-started`, "sandbox failed to start: <bubblewrap's message>" (for agents, the
test-runner, the merge gate's re-test and staging alike), which the engine defers within
the infra budget (`sandbox-start-failure` in docs/reliability.md). The log's text decides
nothing: the command writes there too. A bubblewrap without `--json-status-fd` (an old
release) gets `--info-fd` and no such check: its exits are read as the command's.

Secrets: an agent's environment is the allowlist (`PATH`, locale, `TZ`, `TERM`, `TMPDIR`,
`VIRTUAL_ENV`), its `HOME`, the job's `ORCH_*` variables and the variables its repo names
with `--agent-env`; a suite gets the allowlist only, never the agent's keys
(`test_suites_never_get_the_agents_keys`). Nothing in a sandbox can read the
orchestrator's environment (`/proc` is the job's own) or its files (its home is hidden).

The workspace: each task gets a git repository of its own
(`<ORCH_HOME>/worktrees/<repo>/<KEY>`, branch `orch/<KEY>`), not a `git worktree` of the
user's clone. Its object store borrows the clone's (git's alternates, as `git clone
--shared` makes), it has no remote and no other branch, and its config is the
orchestrator's. Inside the sandbox its `.git` is read-only: the agent edits files, and the
orchestrator commits them from outside, then publishes the branch to the user's
`refs/heads/orch/<KEY>` (a fetch from the workspace whose refspec moves the ref only by a
fast-forward, never `+`; for a branch the merge gate rewrote, a fetch and a
compare-and-swap of the ref). An attempt's objects stay in the workspace's own store
until they are published, so no gc of the clone can take an attempt not yet published and
a refused attempt leaves nothing there. Where a fetch would leave exactly what a copy
does (the clone sets no `core.sharedRepository`, fsync or compression of its own, does
not have its fetches check objects with `fetch.fsckObjects` or `transfer.fsckObjects`,
and git answered the question; fewer objects than the clone's unpack limit, which a
fetch would keep as a pack; no automatic maintenance due, which a fetch would run; the
workspace's store holds loose objects only), the loose objects the tip reaches (a fetch
sends nothing else) are copied into the clone's store instead, each checked against its
name as it is read, all before any is written, and written as git writes one (mode
`0444` less the umask, linked to its name when whole), and the ref moves only after `git
rev-list --objects` finds the tip whole in the clone, as the fetch's own connectivity
check did. When the user's branch already
holds the tip the gate squashes (its objects in the clone's store, as above) and its
rebase changed nothing, the gate's one commit is written by `git commit-tree` (plumbing:
no hook, no automatic gc) straight into the clone's object store, where its tree and
parent are, as the clone writes objects (its `core.sharedRepository`, fsync and
compression settings), and the ref is moved by compare-and-swap alone. The user's clone
is never writable from a sandbox.

Every git command the orchestrator runs has these settings on its command line, whatever
a config says: `core.hooksPath=/dev/null`, `core.fsmonitor=false`, `commit.gpgSign=false`,
`tag.gpgSign=false`, `log.showSignature=false`, `merge.verifySignatures=false`,
`protocol.ext.allow=never`, `protocol.file.allow=user`; fetches and pushes name git's own
`git-upload-pack` and `git-receive-pack`. Each workspace's `info/attributes` says
`* !filter !diff !merge`, so no attribute in the agent's tree picks a filter, diff or merge
driver. (A repository that relies on a filter, such as Git LFS, gets its files unfiltered
in task workspaces.) The user's own settings that matter (identity, remote URLs) come
from the user's clone, which no sandboxed process can write.

Main is guarded: the merge gate records the main it makes (`repos.main_seen`), and a main
that does not descend from that record (rewound or rewritten by anyone) is never a base:
the task is blocked with the alert `main-rewound` and main is not moved. A fast-forward by
the user is fine. When the new main is right, `orch repo set NAME --trust-main` accepts it.

Fail closed: where bubblewrap (or a PID namespace) cannot start, jobs that run untrusted
code are not started: they end `not-started`, the task is blocked with the alert
`sandbox-unavailable`, and the reason names the fix. Only `ORCH_SANDBOX=off` runs them bare;
then every start logs a warning, and `/status`, `orch status` and the dashboard show
"sandbox off". Deploy commands (which need the user's own credentials) run outside by
default; `ORCH_SANDBOX_DEPLOY=on` puts them inside. Codex's own sandbox is switched off
inside ours (it cannot start nested, and ours covers the job).

## Verdicts come from their producers

A deterministic runner's verdict reaches the gate as the text the runner wrote, in memory;
the file in the task folder is the record of it. An agent's artifact is read once from the
job's own output folder (a regular file within the size cap, UTF-8) and copied into the task
folder by the orchestrator; that text is what the gate reads. A file that differs from it
when the gate runs is the tool error `artifact-changed`: the stage runs again and the alert
`artifact-changed` is raised. Every job records the SHA-256 of each artifact it and its
gates wrote (`jobs.artifacts`); a gate that has no artifact of its own job in memory (a
gate-only retry, an approval) reads a file only when a job recorded exactly it, and
`orch task show`, the API, the dashboard and `orch demo` show any other file as "not
written by this pipeline", never as a result. Only the test-runner's own in-memory PASS
records a tree as validated for the merge gate.

## Tests no agent can weaken

Each repo has protected paths (by default its test folders and `test_*.py` files, every
`conftest.py`, `pytest.ini`, `tox.ini`, `noxfile.py`, `.coveragerc`, the pytest and coverage
sections of `pyproject.toml` and `setup.cfg`, and CI configuration; `orch repo set
--protected-paths`). A branch that modifies or deletes one, or adds suite configuration,
waits at testing for a human (`awaiting approval`, the changes named), and no suite runs
until `orch task approve` accepts exactly those changes; new test files need no approval.
Every test that passed on main's validated tree must be collected, run and pass on the
branch (not skipped, deselected, xfailed or missing), or the verdict is FAIL naming it.
Not covered: code inside the pytest process (a new test module, the code under test) can
still reach pytest itself; only a verdict from outside that process would stop it.

## The API

- Closed by default: every request but `GET /health` needs the token (`ORCH_API_TOKEN`,
  else `<ORCH_HOME>/api-token`, mode 0600, made by `orch init` or the first `orch serve`),
  reads included. The sandbox hides `ORCH_HOME` from agents and suites, so code under
  test that reaches the API on 127.0.0.1 can neither pause the scheduler or approve its
  own task nor read other tasks' text, artifacts and job logs.
- The dashboard's link (`orch dashboard` prints it; `orch serve` too, to a terminal only,
  never where its stderr is kept), `http://orch:<code>@127.0.0.1:8765/`, gives a browser
  HTTP Basic credentials that read and change nothing. The code is an HMAC of the token,
  not the token, and a new token revokes it. No cookie: a browser sends 127.0.0.1's
  cookies to every port of it, so to a job listening on one; Basic credentials it keeps
  for the one origin.
- CSRF: a mutation whose `Origin` is not the server's own, or whose `Sec-Fetch-Site` is
  `cross-site` or `same-site`, is 403 even with the token. Pages on other ports of
  127.0.0.1 are other origins. No cookie carries the right to change anything.
- DNS rebinding: any Host but 127.0.0.1, localhost, ::1, the bound address and
  `ORCH_API_ALLOWED_HOSTS` is 421, for reads too; the same-origin policy keeps other
  pages from reading the answers.
- Large bodies: Host, origin, token and `Content-Length` are checked before the body is
  read; bodies over `ORCH_API_MAX_BODY_BYTES` are 413.
- `orch serve --insecure-no-token` removes only the token check (loopback only, a warning
  on every start); any local process or user, a job's included, can then read and change
  tasks.
- The dashboard shows what agents write (artifacts, reasons, logs, checks, an issue's
  title and body) as text: its templates escape every value, and nothing renders
  markdown. Links are the page's own, or a forge's http(s) address (anything else,
  `javascript:` or an address Python cannot parse, is text). Its pages forbid inline
  script and styles and framing (`Content-Security-Policy`), and htmx evaluates nothing
  (`allowEval`, `allowScriptTags` off). They hold no token: markup that got in, such as
  an htmx `hx-post`, which the CSP cannot stop, would send a mutation without it (401).
  The raw artifact and log views are `text/markdown` and `text/plain` with `nosniff`.
  `tests/integration/test_dashboard_attacks.py` and the browser test
  `tests/acceptance/test_dashboard_browser.py` put markup in every such text.

## Task text stays text

A task's title is one heading line and every line of its body is block-quoted in
`00-task.md`, so no title or body adds a key to it. Role prompts quote the task, and a
failing report after a rollback, in one fence longer than any backtick run in them, so no
fence, heading or template syntax in a task can swallow or replace the orchestrator's
instructions.

## Other users of the machine

A job's log holds what its command printed (a deploy's, with the user's credentials in its
environment), and the database, prompts and patches hold the tasks. Every folder the
orchestrator makes under `ORCH_HOME` is mode 0700 and every file it writes 0600, asked for
when it is made (`orchestrator/private_files.py`), whatever the umask: the home, `tasks/`,
each task's folder, `runs/` with the logs, prompts, carried diffs and each job's home and
out folder, `patches/`, the database and its `-wal` and `-shm`, the API token,
`worktrees/` and each workspace's folder (what git checks out in it has git's modes). A
folder that was there already keeps its mode; for a home made by an earlier release,
`chmod 700 <ORCH_HOME>` closes it all.

## Attacks on the sandbox

Each row is a hostile development agent in a real pipeline, run bare (`ORCH_SANDBOX=off`)
and sandboxed by `tests/integration/test_sandbox.py`.

"""

BEYOND = """
## Attacks on verdicts, tests, the API and task text

Each row is a test that plays the attacker (the file named), shown to succeed on the release
before these defences and stopped now. Where the attacker writes into the task folder, it
runs bare: inside the sandbox it cannot reach that folder at all.

"""

OUTRO = """
## Not covered yet

- `ORCH_SANDBOX=off` is what it says: the bare column above. Hooks, signing programs and
  pack programs still never run inside the orchestrator's git calls, but an agent that can
  write its workspace's config can make `git add` run a filter, and it can reach
  everything its user can.
- The remote's credentials: an agent gets no SSH agent socket and no credential helper
  of ours, but `--agent-env` can still name a token for it, by the user's choice.
- Sockets of the system outside `/run` and `/tmp`: a socket on the read-only system still
  takes connections (one a service keeps in `/var/lib`, say), and with the network shared
  so does an abstract socket (an X server's) and every server on loopback (a PostgreSQL
  that trusts `127.0.0.1`): `ORCH_SANDBOX_NETWORK=none` cuts both. A repo whose suite
  needs a server's socket in `/run` names it: `orch repo set --sandbox-ro
  /run/postgresql`.
- The dashboard's code is asked for by a Basic challenge: a job listening on another port
  of 127.0.0.1 can ask for it too, and a user who types the code into that prompt gives
  it away (the browser's prompt names the port). The token itself never reaches a
  browser.
- A user known only to a directory service (LDAP through nslcd, winbind, systemd-homed)
  has no name inside the sandbox: those lookups go through sockets in the hidden `/run`
  (`/run/nslcd/socket`, `/run/systemd/userdb`). A tool that needs the name (ssh, say)
  fails there; binding such a socket back with `--sandbox-ro` is the user's choice, as it
  lets the job ask that service anything.
"""


def render(attacks: list[Attack], defended: list[Defended]) -> str:
    """docs/security.md, from the sandbox's ``attacks`` and the ``defended`` rows."""
    rows = ["| Attack | Bare (`ORCH_SANDBOX=off`) | Sandboxed |", "|---|---|---|"]
    rows += [f"| {a.attack} | {a.bare} | {a.sandboxed} |" for a in attacks]
    more = ["| Attack | Before | Now | Test |", "|---|---|---|---|"]
    more += [f"| {d.attack} | {d.before} | {d.now} | `{d.test}` |" for d in defended]
    return INTRO + "\n".join(rows) + "\n" + BEYOND + "\n".join(more) + "\n" + OUTRO
