"""The sandbox's plan: what a job's bubblewrap argv hides, binds and cuts (pure, no bwrap)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from orchestrator import sandbox
from orchestrator.config import load_settings, sandbox_network_for
from orchestrator.gitops import git as gitcmd
from orchestrator.sandbox import Sandbox, local_remotes


def _pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_hidden_then_readonly_then_writable(tmp_path: Path) -> None:
    home, repo, work, git = (tmp_path / n for n in ("home", "repo", "home/wt", "repo/.git"))
    for p in (home, repo, work, git):
        p.mkdir(parents=True, exist_ok=True)
    argv = Sandbox(writable=(work,), readonly=(git,), hidden=(home, repo)).wrap(
        ["pytest", "-q"], work
    )
    assert argv[0] == "bwrap"
    for flag in ("--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts"):
        assert flag in argv
    assert "--unshare-net" not in argv
    assert argv[-3:] == ["--", "pytest", "-q"]
    # Later mounts cover earlier ones: hide first, then bind back read-only, then writable.
    order = [i for i, a in enumerate(argv) if a in ("--tmpfs", "--ro-bind", "--bind")]
    kinds = [(argv[i], argv[i + 1]) for i in order]
    assert kinds.index(("--tmpfs", str(home))) < kinds.index(("--ro-bind", str(git)))
    assert kinds.index(("--ro-bind", str(git))) < kinds.index(("--bind", str(work)))
    assert _pairs(argv, "--ro-bind")[0] == "/"  # the system, read-only, first of all
    assert "/proc" in _pairs(argv, "--proc")
    assert argv[argv.index("--chdir") + 1] == str(work)


def test_missing_paths_are_left_out_and_network_can_be_cut(tmp_path: Path) -> None:
    argv = Sandbox(writable=(tmp_path / "nope",), network=False, userns=False).wrap(["x"], tmp_path)
    assert "--unshare-net" in argv
    assert "--unshare-user" not in argv
    assert str(tmp_path / "nope") not in argv


@pytest.mark.parametrize(
    ("value", "kind", "shared"),
    [
        ("shared", "agent", True),
        ("none", "suite", False),
        ("agent=shared,suite=none", "suite", False),
        ("agent=shared,suite=none", "agent", True),
        ("suite=none", "deploy", True),
    ],
)
def test_network_per_kind(value: str, kind: str, shared: bool) -> None:
    assert sandbox_network_for(value, kind) is shared


@pytest.mark.parametrize("bad", ["off", "agent=off", "robot=none", "agent"])
def test_network_setting_refuses_what_it_cannot_read(bad: str) -> None:
    with pytest.raises(ValueError, match="sandbox network"):
        sandbox_network_for(bad, "agent")


def test_a_workspace_git_dir_is_sealed_after_the_workspace(tmp_path: Path) -> None:
    # A writable bind made after a read-only one inside it would cover it: the workspace's
    # `.git` is bound read-only last, and the hidden places are remounted read-only.
    home, work = tmp_path / "home", tmp_path / "home" / "wt"
    (work / ".git").mkdir(parents=True)
    argv = Sandbox(writable=(work,), hidden=(home,), sealed=(work / ".git",)).wrap(["x"], work)
    binds = [(a, argv[i + 1]) for i, a in enumerate(argv) if a in ("--bind", "--ro-bind")]
    assert binds.index(("--bind", str(work))) < binds.index(("--ro-bind", str(work / ".git")))
    assert _pairs(argv, "--remount-ro") == [str(home)]
    assert argv.index("--remount-ro") > argv.index("--bind")


def test_a_hidden_place_inside_a_writable_one_stays_writable(tmp_path: Path) -> None:
    # Remounting it read-only would take the writable bind with it.
    work = tmp_path / "wt"
    (work / "cache").mkdir(parents=True)
    argv = Sandbox(writable=(work,), hidden=(work / "cache",)).wrap(["x"], work)
    assert "--remount-ro" not in argv


def test_a_hidden_place_inside_another_is_hidden_by_the_outer_one(tmp_path: Path) -> None:
    # The default layout: the orchestrator's home (~/.orchestrator) inside the user's home,
    # both hidden. An inner empty file system made before the outer one is covered by it,
    # and bubblewrap then fails to remount the inner one read-only: every job failed.
    user = tmp_path / "user"
    home, work = user / ".orchestrator", user / ".orchestrator" / "worktrees" / "T-1"
    work.mkdir(parents=True)
    argv = Sandbox(writable=(work,), hidden=(home, user)).wrap(["x"], work)
    assert _pairs(argv, "--tmpfs") == ["/tmp", str(user)]
    assert _pairs(argv, "--remount-ro") == [str(user)]


def test_only_what_the_read_only_system_hides_is_bound_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each bind is a mount bubblewrap makes at every job's start. A read-only place the
    # system already shows as it is (a venv in /opt, /usr) gets none; one in a hidden place
    # (a toolchain in the user's home) or in the sandbox's own /tmp is bound back, and one
    # that only resolves into a hidden place by the path it resolves to.
    home, tools = tmp_path / "home", tmp_path / "tools"
    for p in (home / "venv", home / "py", tools):
        p.mkdir(parents=True)
    (tmp_path / "link").symlink_to(home / "py")
    readonly = (tools, home / "venv", tmp_path / "link", Path("/usr"))
    box = Sandbox(writable=(), readonly=readonly, hidden=(home,))
    # As it runs: tmp_path lies in /tmp, which the sandbox mounts afresh, so every place
    # there is bound back; /usr is not.
    system = ["/", "/dev/null"]  # the system, and /dev/null over /dev/tty
    assert _pairs(box.wrap(["x"], tmp_path), "--ro-bind") == [*system, *map(str, readonly[:3])]
    # Were /tmp the system's own: only the hidden places.
    monkeypatch.setattr(sandbox, "_fresh_spellings", tuple)
    assert _pairs(box.wrap(["x"], tmp_path), "--ro-bind") == [
        *system,
        str(home / "venv"),
        str(home / "py"),  # the link's target: the link shows it
    ]


def test_a_place_that_holds_a_hidden_one_is_never_bound_back(tmp_path: Path) -> None:
    # Bound back read-only, the user's home (or a folder holding the clone, or `/`) would
    # show again all that the sandbox hides in it: ~/.ssh, the orchestrator's home.
    user = tmp_path / "user"
    home, clone = user / ".orchestrator", user / "src" / "app"
    for p in (home, clone, user / "bin"):
        p.mkdir(parents=True)
    (tmp_path / "user-link").symlink_to(user)
    readonly = (user, user / "src", tmp_path / "user-link", tmp_path, Path("/"), user / "bin")
    box = Sandbox(writable=(), readonly=readonly, hidden=(home, clone, user))
    assert _pairs(box.wrap(["x"], tmp_path), "--ro-bind") == ["/", "/dev/null", str(user / "bin")]


def test_a_toolchain_in_the_users_home_is_narrowed_to_its_folder(tmp_path: Path) -> None:
    # An agent CLI in ~/bin (npm's prefix set to ~): its install prefix is the home itself,
    # never bound back; its own folder is. A venv's folder `bin` is shown by the venv's bind.
    user, venv = tmp_path / "user", tmp_path / "user" / "venv"
    for p in (user / "bin", venv / "bin"):
        p.mkdir(parents=True)
    for exe in (user / "bin" / "agent", venv / "bin" / "tool"):
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)

    def bound(exe: Path) -> list[str]:
        found = tuple(sandbox.toolchain_paths([str(exe)]))
        box = Sandbox(writable=(), readonly=found, hidden=(user,))
        return _pairs(box.wrap(["x"], tmp_path), "--ro-bind")

    assert str(user / "bin") in bound(user / "bin" / "agent")
    assert str(user) not in bound(user / "bin" / "agent")
    assert str(venv) in bound(venv / "bin" / "tool")
    assert str(venv / "bin") not in bound(venv / "bin" / "tool")


def test_local_remotes_are_found(tmp_path: Path, make_repo: Any) -> None:
    repo = make_repo()
    for name, url in (
        ("a", "/srv/git/a.git"),
        ("b", "file:///srv/git/b.git"),
        ("c", "https://127.0.0.1/x.git"),
        ("d", "git@localhost:x.git"),
    ):
        subprocess.run(["git", "remote", "add", name, url], cwd=repo, check=True, timeout=30)
    subprocess.run(
        ["git", "config", "remote.a.pushurl", "/srv/git/push.git"], cwd=repo, check=True, timeout=30
    )
    assert sorted(map(str, local_remotes(repo))) == [
        "/srv/git/a.git",
        "/srv/git/b.git",
        "/srv/git/push.git",
    ]


def _counting_git(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Every git call (the sandbox module's, in these tests), recorded (and still made)."""
    calls: list[tuple[str, ...]] = []
    real = gitcmd.git

    def counted(args: Any, cwd: Path, **kw: Any) -> Any:
        calls.append(tuple(args))
        return real(args, cwd, **kw)

    monkeypatch.setattr(gitcmd, "git", counted)
    return calls


def test_local_remotes_ask_git_once_while_no_config_changes(
    make_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo()
    subprocess.run(["git", "remote", "add", "a", "/srv/git/a.git"], cwd=repo, check=True)
    sandbox.local_remotes(repo)  # the system config's place may be looked up once
    calls = _counting_git(monkeypatch)
    for _ in range(3):
        assert local_remotes(repo) == [Path("/srv/git/a.git")]
    assert calls == []


def test_a_local_remote_added_after_a_job_is_hidden_from_the_next(
    tmp_path: Path, make_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The attack: the user (or anything acting as the user) adds a local remote while the
    # worker runs; a kept answer that missed it would let the next sandboxed job push there.
    home = tmp_path / "userhome"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    repo = make_repo()
    settings = load_settings(home=tmp_path / "orch")
    work = tmp_path / "wt"
    work.mkdir()

    def hidden() -> list[str]:
        box = sandbox.for_job(settings, kind="agent", repo_path=repo, argv=["sh"], writable=[work])
        assert box is not None
        return [str(p) for p in box.hidden]

    if not sandbox.probe().ok:
        pytest.skip("bubblewrap cannot run here")
    assert "/srv/git/new.git" not in hidden()
    subprocess.run(["git", "remote", "add", "new", "/srv/git/new.git"], cwd=repo, check=True)
    assert "/srv/git/new.git" in hidden()
    # The same number of bytes, the same modification time: still seen (bytes, not stat).
    config = repo / ".git" / "config"
    before = os.stat(config)
    text = config.read_bytes()
    config.write_bytes(text.replace(b"/srv/git/new.git", b"/srv/git/NEW.git"))
    os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert "/srv/git/NEW.git" in hidden()
    # In the user's global config, and as a push URL.
    (home / ".gitconfig").write_text('[remote "g"]\n\tpushurl = file:///srv/git/g.git\n')
    assert "/srv/git/g.git" in hidden()


def test_included_config_is_always_asked(
    tmp_path: Path, make_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An [include] names a file this cannot follow: git answers every time.
    home = tmp_path / "userhome"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    extra = tmp_path / "extra.gitconfig"
    extra.write_text("")
    (home / ".gitconfig").write_text(f"[include]\n\tpath = {extra}\n")
    repo = make_repo()
    assert local_remotes(repo) == []
    calls = _counting_git(monkeypatch)
    extra.write_text('[remote "x"]\n\turl = /srv/git/x.git\n')
    assert local_remotes(repo) == [Path("/srv/git/x.git")]
    assert len(calls) == 1


# ----------------------------------------------------------------- the plan, as it was


def _old_wrap(box: Sandbox, argv: list[str], cwd: Path, info_fd: int | None) -> list[str]:
    """``Sandbox.wrap`` as it was before the plan was made once per run (pathlib, every
    path looked at on each call): the argv the sandbox must still get, to the byte, but
    for the read-only binds of places the read-only system shows as they are anyway, of
    places that hold a hidden one, and of places inside one bound already."""

    # Each place resolved once a call: the files do not change while it runs.
    @functools.cache
    def resolved(path: Path) -> Path:
        return path.resolve()

    def existing(paths: tuple[Path, ...]) -> list[Path]:
        seen: set[Path] = set()
        found: list[Path] = []
        for raw in paths:
            path = Path(os.path.abspath(raw))
            if path in seen or not path.exists():
                continue
            seen.add(path)
            found.append(path)
        return found

    def outermost(paths: list[Path]) -> list[Path]:
        return [p for p in paths if not any(p != q and p.is_relative_to(q) for q in paths)]

    out = [box.bwrap, "--die-with-parent", "--unshare-pid", "--unshare-ipc"]
    if info_fd is not None:
        out += ["--json-status-fd" if box.json_status else "--info-fd", str(info_fd)]
    out += ["--unshare-uts", "--hostname", "orch-sandbox"]
    if box.userns:
        out.append("--unshare-user")
    if not box.network:
        out.append("--unshare-net")
    out += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    out += ["--ro-bind", "/dev/null", "/dev/tty"]
    out += ["--tmpfs", "/tmp"]
    given = existing(box.hidden)
    hidden = outermost(existing((*given, *(resolved(p) for p in given))))

    def at(path: Path) -> str:
        # Where the sandbox resolves it: through the links it shows, not those inside a
        # place it mounts empty (from the outermost such place on, as given).
        outer = [e for e in [Path("/tmp"), Path("/dev"), Path("/proc"), *hidden] if e != path]
        outer = [e for e in outer if path.is_relative_to(e)]
        if not outer:
            return str(resolved(path))
        place = min(outer, key=lambda e: len(e.parts))
        return str(resolved(place) / path.relative_to(place))

    for path in hidden:
        out += ["--tmpfs", at(path)]
    fresh = [Path("/tmp"), Path("/dev"), Path("/proc")]
    unseen = [*fresh, *hidden]
    unseen += [resolved(p) for p in unseen]
    kept_out = [*fresh, *existing(box.hidden)]
    kept_out += [resolved(p) for p in kept_out]
    bound: list[Path] = []
    for path in existing(box.readonly):
        real = resolved(path)
        if any(k.is_relative_to(q) for k in kept_out for q in (path, real)):
            continue
        target = path if any(path.is_relative_to(u) for u in unseen) else real
        if not any(target.is_relative_to(u) for u in unseen):
            continue
        if not any(target.is_relative_to(b) for b in bound):
            out += ["--ro-bind", str(target), at(target)]
            bound.append(target)
    for path in existing(box.writable):
        out += ["--bind", str(path), at(path)]
    for path in existing(box.sealed):
        out += ["--ro-bind", str(path), at(path)]
    writable = existing(box.writable)
    for path in hidden:
        if not any(path.is_relative_to(w) for w in writable):
            out += ["--remount-ro", at(path)]
    out += ["--chdir", str(cwd), "--", *argv]
    return out


@pytest.mark.parametrize("base", ["tmp", "shown"])
def test_the_plan_is_the_argv_the_sandbox_always_had(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, base: str
) -> None:
    # Random layouts of what a job hides, binds and seals: nested, repeated, missing,
    # relative, through links, with trailing slashes and dots; each argv (with and without
    # the status fd, either kind of it) is the one the pathlib version made. In /tmp (which
    # the sandbox mounts empty: its links are not there) and in a folder the read-only
    # system shows (whose links the sandbox follows).
    import random

    rng = random.Random(19)
    if base == "shown":
        shown = Path(tempfile.mkdtemp(prefix="orch-plan-", dir="/var/tmp"))
        request.addfinalizer(lambda: shutil.rmtree(shown))
        root = shown / "t"
    else:
        root = tmp_path / "t"
    names = ["a", "a/b", "a/b/c", "a/bc", "d", "d/e", "f", "g/h", "x y", "u/.git", "u"]
    for name in names[:-3]:
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "u" / ".git").mkdir(parents=True)
    (root / "link").symlink_to(root / "a")
    (root / "file").write_text("x")
    monkeypatch.chdir(root)
    pool: list[Path | str] = [
        *(root / n for n in names),
        root / "link",
        root / "link" / "b",
        root / "file",
        root / "missing",
        root / "missing" / "deeper",
        root / "file" / "under-a-file",
        Path("a/b"),  # relative: made absolute against the cwd
        f"{root}/a/",
        f"{root}/./d/../d",
        f"{root}//a//b",
        f"/{root}/a",  # two leading slashes: a root of its own to POSIX (and pathlib)
        f"/{root}/d/e",
        "/",
        root,
        Path.home(),
    ]
    for _ in range(400):

        def pick() -> tuple[Path, ...]:
            return tuple(Path(p) for p in rng.sample(pool, rng.randint(0, 5)))

        box = Sandbox(
            writable=pick(),
            readonly=pick(),
            hidden=pick(),
            sealed=pick(),
            network=rng.random() < 0.5,
            userns=rng.random() < 0.5,
            json_status=rng.random() < 0.5,
        )
        cwd = Path(rng.choice(names))
        argv = ["sh", "-c", "echo hi", "--"]
        fd = rng.choice([None, 3, 17])
        # The pathlib version is most of this test's time: each argv it makes is made once.
        want = _old_wrap(box, argv, cwd, fd)
        assert box.wrap(argv, cwd, info_fd=fd) == want
        plan = box.plan(cwd)
        assert plan.argv(argv, info_fd=fd) == want
        # The log header's line: everything before the command, no status fd (as it was).
        old = want if fd is None else _old_wrap(box, argv, cwd, None)
        assert plan.options() == old[: old.index("--")]


def test_a_path_that_cannot_be_looked_at_still_fails_the_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pathlib raised for any error but "not there" (a folder we may not search): so does
    # the plan. A hidden place that cannot be told there is never silently left visible.
    closed = str(tmp_path / "closed" / "inner")
    real_stat = os.stat

    def stat(path: Any, *args: Any, **kw: Any) -> os.stat_result:
        if os.fspath(path) == closed:
            raise PermissionError(13, "Permission denied", closed)
        return real_stat(path, *args, **kw)

    monkeypatch.setattr(os, "stat", stat)
    box = Sandbox(writable=(), hidden=(Path(closed),))
    with pytest.raises(PermissionError):
        _old_wrap(box, ["x"], tmp_path, None)
    with pytest.raises(PermissionError):
        box.plan(tmp_path)


def test_the_plan_matches_pathlib_on_odd_paths(tmp_path: Path) -> None:
    # Names a job's places may carry: a line break, a link loop (ELOOP: "not there" to
    # pathlib), a dangling link, a link with ".." after it (made absolute by text, not
    # followed), a NUL (ValueError: "not there"). Each argv is the pathlib version's.
    root = tmp_path
    (root / "a\nb" / "c").mkdir(parents=True)
    (root / "d" / "in").mkdir(parents=True)
    (root / "loop").symlink_to(root / "loop")
    (root / "dangling").symlink_to(root / "nowhere")
    (root / "dlink").symlink_to(root / "d" / "in")
    odd = (
        root / "a\nb",
        root / "a\nb" / "c",
        root / "loop",
        root / "loop" / "x",
        root / "dangling",
        root / "dlink" / "..",
        root / "d",
        Path(f"{root}/d\x00x"),
    )
    for i in range(len(odd)):
        shifted = odd[i:] + odd[:i]
        box = Sandbox(
            writable=shifted[:2], readonly=shifted[2:4], hidden=shifted[4:6], sealed=shifted[6:]
        )
        assert box.plan(root).argv(["x"], info_fd=3) == _old_wrap(box, ["x"], root, 3)


def test_a_link_enters_the_runtime_folder_by_its_first_path_there(tmp_path: Path) -> None:
    """``_entry_into``: where a chain of links first enters a folder (``/run``), as the
    sandbox resolves it: past that point its empty folder has no link of the host's."""
    run, etc = tmp_path / "run", tmp_path / "etc"
    (run / "host" / "etc").mkdir(parents=True)
    (run / "host" / "run" / "resolve").mkdir(parents=True)
    etc.mkdir()
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "run").symlink_to("../run")
    (run / "host" / "etc" / "resolv.conf").symlink_to("../run/resolve/stub-resolv.conf")
    cases = {
        # resolvconf: a relative link; the file need not exist yet
        "relative": ("../run/resolve/resolv.conf", run / "resolve" / "resolv.conf"),
        # NetworkManager: through the /var/run link
        "var-run": (str(tmp_path / "var/run/nm/resolv.conf"), run / "nm" / "resolv.conf"),
        # toolbox: the host's own link in the folder is not followed
        "toolbox": (str(run / "host/etc/resolv.conf"), run / "host" / "etc" / "resolv.conf"),
        "dotdot": (str(run / "x/../y/./f"), run / "y" / "f"),
        "elsewhere": ("../elsewhere/f", None),
        "out-again": (str(run / "../etc/f"), None),
        "loop": ("loop", None),
    }
    for name, (target, _) in cases.items():
        (etc / name).symlink_to(target)
    for name, (_, entry) in cases.items():
        found = sandbox._entry_into(str(etc / name), str(run))
        assert found == (None if entry is None else str(entry)), name


def test_links_in_etc_are_looked_for_again_while_its_mtime_is_recent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change to ``/etc`` within the clock's tick after a look leaves its mtime as it was:
    while that mtime is recent, its links are looked for at every plan, not kept."""
    run, etc = tmp_path / "run", tmp_path / "etc"
    run.mkdir()
    etc.mkdir()
    for name in ("hosts", "resolv.conf"):
        (run / name).write_text("x\n")
    (etc / "hosts").symlink_to(run / "hosts")
    changed = 10**18  # ns: /etc changed at this instant, and the plan comes 1 ms later
    monkeypatch.setattr(sandbox.time, "time_ns", lambda: changed + 10**6)
    os.utime(etc, ns=(changed, changed))
    first = sandbox._system_files_in_run(str(etc), str(run))
    # A link added in the same tick: the mtime does not move.
    (etc / "resolv.conf").symlink_to(run / "resolv.conf")
    os.utime(etc, ns=(changed, changed))
    second = sandbox._system_files_in_run(str(etc), str(run))
    assert (first, second) == (
        [str(run / "hosts")],
        [str(run / n) for n in ("hosts", "resolv.conf")],
    )
