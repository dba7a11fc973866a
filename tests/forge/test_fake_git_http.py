"""git's smart HTTP on the fake GitHub: clone, fetch and push are real git over HTTP,
with the token as the password, and refused without it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from orchestrator.forge.fake_github import FakeGitHub
from orchestrator.forge.fake_github_api import merge_pull


def run_git(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def clone(fake: FakeGitHub, repo: str, dest: Path, env: dict[str, str]) -> Path:
    res = run_git(dest.parent, env, "clone", "-q", fake.clone_url(repo), str(dest))
    assert res.returncode == 0, res.stderr
    for key, value in (("user.name", "Dev"), ("user.email", "dev@example.invalid")):
        run_git(dest, env, "config", key, value)
    return dest


def commit(work: Path, env: dict[str, str], name: str, content: str | bytes) -> str:
    target = work / name
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content, encoding="utf-8")
    assert run_git(work, env, "add", name).returncode == 0
    assert run_git(work, env, "commit", "-q", "-m", f"add {name}").returncode == 0
    return run_git(work, env, "rev-parse", "HEAD").stdout.strip()


def test_clone_push_and_fetch_are_real_git(
    fake: FakeGitHub, repo: str, tmp_path: Path, git_env: dict[str, str]
) -> None:
    work = clone(fake, repo, tmp_path / "one", git_env)
    assert (work / "app.py").read_text() == "x = 1\n"
    sha = commit(work, git_env, "feature.txt", "new\n")
    push = run_git(work, git_env, "push", "-q", "origin", "HEAD:refs/heads/feature")
    assert push.returncode == 0, push.stderr
    assert fake.branch_sha(repo, "feature") == sha
    other = clone(fake, repo, tmp_path / "two", git_env)
    fetched = run_git(other, git_env, "fetch", "-q", "origin", "feature")
    assert fetched.returncode == 0, fetched.stderr
    assert run_git(other, git_env, "rev-parse", "FETCH_HEAD").stdout.strip() == sha


def test_a_bad_token_on_push_is_refused(
    fake: FakeGitHub, repo: str, tmp_path: Path, git_env: dict[str, str]
) -> None:
    work = clone(fake, repo, tmp_path / "w", git_env)
    commit(work, git_env, "f.txt", "f\n")
    bad = fake.clone_url(repo, token="ghp_not_the_token")
    push = run_git(work, git_env, "push", "-q", bad, "HEAD:refs/heads/sneaky")
    assert push.returncode != 0
    assert "Authentication failed" in push.stderr
    assert fake.branch_sha(repo, "sneaky") is None
    refused = [r for r in fake.requests if r.kind == "git" and r.path.startswith(f"/{repo}.git")]
    assert refused[-1].status == 401


def test_a_token_made_bad_is_refused_and_no_credentials_are_refused(
    fake: FakeGitHub, repo: str, tmp_path: Path, git_env: dict[str, str]
) -> None:
    url = fake.clone_url(repo)
    fake.set_token("ghp_rotated")
    res = run_git(tmp_path, git_env, "clone", "-q", url, str(tmp_path / "x"))
    assert res.returncode != 0
    bare_url = f"{fake.url}/{repo}.git"
    res = run_git(tmp_path, git_env, "clone", "-q", bare_url, str(tmp_path / "y"))
    assert res.returncode != 0
    # The new token works, as the user name too (GitHub takes either).
    as_user = fake.url.replace("http://", "http://ghp_rotated@") + f"/{repo}.git"
    res = run_git(tmp_path, git_env, "clone", "-q", as_user, str(tmp_path / "z"))
    assert res.returncode == 0, res.stderr


def test_a_large_chunked_push_arrives_whole(
    fake: FakeGitHub, repo: str, tmp_path: Path, git_env: dict[str, str]
) -> None:
    work = clone(fake, repo, tmp_path / "w", git_env)
    blob = os.urandom(300_000)  # incompressible, so the pack is larger than the buffer
    sha = commit(work, git_env, "blob.bin", blob)
    # A post buffer smaller than the pack makes git send it with chunked encoding.
    push = run_git(work, git_env, "-c", "http.postBuffer=65536", "push", "-q", "origin", "HEAD:big")
    assert push.returncode == 0, push.stderr
    assert fake.branch_sha(repo, "big") == sha
    show = fake.bare.must(repo, "cat-file", "-s", f"{sha}:blob.bin")
    assert int(show) == len(blob)


def test_a_push_moves_the_open_pull_requests_head(
    fake: FakeGitHub, repo: str, tmp_path: Path, git_env: dict[str, str]
) -> None:
    first = fake.push_commit(repo, "topic", {"t.txt": "1\n"}, message="topic")
    number = fake.open_pull(repo, "topic", title="Topic")
    assert fake.pull(repo, number).head_sha == first
    work = clone(fake, repo, tmp_path / "w", git_env)
    assert run_git(work, git_env, "checkout", "-q", "topic").returncode == 0
    second = commit(work, git_env, "t2.txt", "2\n")
    assert run_git(work, git_env, "push", "-q", "origin", "topic").returncode == 0
    assert fake.pull(repo, number).head_sha == second
    sync = [d for d in fake.deliveries if d.event == "pull_request" and d.action == "synchronize"]
    assert sync
    assert sync[-1].payload["before"] == first
    assert sync[-1].payload["after"] == second


def test_merges_move_main_for_real(fake: FakeGitHub, repo: str) -> None:
    """squash, merge and rebase each leave main with the change, made by git plumbing."""
    base = fake.branch_sha(repo, "main")
    for i, method in enumerate(("squash", "merge", "rebase")):
        branch = f"b{i}"
        fake.push_commit(repo, branch, {f"{branch}.txt": "a\n"}, message=f"{branch} one")
        head = fake.push_commit(repo, branch, {f"{branch}.txt": "b\n"}, message=f"{branch} two")
        number = fake.open_pull(repo, branch, title=f"Change {branch}")
        before = fake.branch_sha(repo, "main")
        pull = fake.repo(repo).pulls[number]
        with fake.changing():
            answer = merge_pull(fake, fake.repo(repo), pull, head, method)
        assert answer.status == 200, answer.payload
        tip = fake.branch_sha(repo, "main")
        assert tip is not None
        assert tip != before
        parents = fake.bare.must(repo, "log", "-1", "--format=%P", tip).split()
        content = fake.bare.must(repo, "show", f"{tip}:{branch}.txt")
        assert content == "b"
        if method == "squash":
            assert parents == [before]
        elif method == "merge":
            assert parents == [before, head]
        else:
            # Each commit copied onto main: two new commits, the first on the old main.
            assert fake.bare.commits_between(repo, before or "", tip) != []
            assert len(fake.bare.commits_between(repo, before or "", tip)) == 2
            assert tip != head
    assert base != fake.branch_sha(repo, "main")
