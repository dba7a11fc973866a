"""The git side of the fake GitHub: real bare repositories on disk, served over git's smart
HTTP by ``git http-backend``, and the plumbing the fake's API does in them (a commit of
files, a branch read, a pull request merged by squash, merge or rebase).

Every git call but one goes through ``gitops.git.git``. ``git http-backend`` is the one
exception: it is a CGI program that speaks packfiles, bytes in and bytes out, which
``git()`` (text in, text out) cannot carry; it is run here with an argv list, a filtered
environment and a timeout, as ``git()`` would.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import OrchestratorError
from orchestrator.gitops.git import GitResult, git, git_environment

__all__ = ["BareRepos", "CgiAnswer", "FakeGitError", "MergeOutcome", "split_git_path"]

HTTP_BACKEND_TIMEOUT_S = 120.0
ZERO_SHA = "0" * 40
_GIT_PATH = re.compile(r"^/(?P<owner>[\w.-]+)/(?P<name>[\w.-]+?)\.git(?P<rest>/.*)?$")
# Who the fake's own commits (merges, squashes, rebased copies) are committed by, as on
# GitHub, where the committer of a merge made through the API is "GitHub".
COMMITTER = {"GIT_COMMITTER_NAME": "GitHub", "GIT_COMMITTER_EMAIL": "noreply@github.com"}


class FakeGitError(OrchestratorError):
    """A git call of the fake failed where it must not (a test set it up wrong)."""


@dataclass(frozen=True)
class CgiAnswer:
    """What ``git http-backend`` answered: status, headers and body, ready to send."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class MergeOutcome:
    """A pull request's merge in the bare repository: the new tip, or why not."""

    sha: str | None
    reason: str = ""


def split_git_path(path: str) -> tuple[str, str] | None:
    """``/owner/name.git/info/refs`` -> (``owner/name``, ``/info/refs``); None otherwise."""
    m = _GIT_PATH.match(path)
    if m is None:
        return None
    return f"{m['owner']}/{m['name']}", m["rest"] or "/"


def identity(login: str) -> dict[str, str]:
    """The author environment of a commit made as GitHub user ``login``."""
    email = f"{login}@users.noreply.github.com"
    return {"GIT_AUTHOR_NAME": login, "GIT_AUTHOR_EMAIL": email}


class BareRepos:
    """The bare repositories under ``root``, one per ``owner/name``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, full_name: str) -> Path:
        """Where ``owner/name``'s bare repository is."""
        return self.root / f"{full_name}.git"

    def git(self, full_name: str, *args: str, env: Mapping[str, str] | None = None) -> GitResult:
        """``git <args>`` in the bare repository (its git dir named, so no inherited
        ``GIT_DIR`` can point the call elsewhere)."""
        bare = self.path(full_name)
        return git([f"--git-dir={bare}", *args], bare, env=env)

    def must(self, full_name: str, *args: str, env: Mapping[str, str] | None = None) -> str:
        """``git <args>`` that must succeed; its stdout, stripped."""
        res = self.git(full_name, *args, env=env)
        if not res:
            msg = f"git {' '.join(args[:2])} failed in {full_name}: {res.stderr.strip()}"
            raise FakeGitError(msg)
        return res.stdout.strip()

    def create(
        self,
        full_name: str,
        *,
        files: Mapping[str, str | bytes] | None = None,
        source: Path | None = None,
        branch: str = "main",
        author: str = "octocat",
    ) -> str:
        """A new bare repository, from a local repository's branches and tags (``source``)
        or with one commit of ``files`` on ``branch``; the tip of ``branch``."""
        bare = self.path(full_name)
        if bare.exists():
            msg = f"repository {full_name} exists already"
            raise FakeGitError(msg)
        bare.parent.mkdir(parents=True, exist_ok=True)
        if source is not None:
            res = git(["clone", "--bare", "--quiet", str(source), str(bare)], self.root)
            if not res:
                msg = f"git clone --bare of {source} failed: {res.stderr.strip()}"
                raise FakeGitError(msg)
        else:
            res = git(
                ["init", "--bare", "--quiet", f"--initial-branch={branch}", str(bare)], self.root
            )
            if not res:
                msg = f"git init --bare failed: {res.stderr.strip()}"
                raise FakeGitError(msg)
        # Pushes over smart HTTP are refused unless receive-pack is switched on.
        self.must(full_name, "config", "http.receivepack", "true")
        self.must(full_name, "symbolic-ref", "HEAD", f"refs/heads/{branch}")
        if source is None:
            content = files if files is not None else {"README.md": f"# {full_name}\n"}
            return self.commit_files(full_name, branch, content, "Initial commit", author=author)
        sha = self.branch_sha(full_name, branch)
        if sha is None:
            msg = f"{source} has no branch {branch}"
            raise FakeGitError(msg)
        return sha

    def resolve(self, full_name: str, ref: str) -> str | None:
        """The commit ``ref`` (a SHA, a branch, a tag) names, or None."""
        res = self.git(full_name, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        return res.stdout.strip() or None if res else None

    def branch_sha(self, full_name: str, branch: str) -> str | None:
        """The tip of ``branch``, or None when there is no such branch."""
        return self.resolve(full_name, f"refs/heads/{branch}")

    def refs(self, full_name: str) -> dict[str, str]:
        """Every branch and its tip: what a push is seen to have changed by."""
        out = self.must(
            full_name, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads"
        )
        return dict(line.split(" ", 1) for line in out.splitlines() if line)

    def commit_info(self, full_name: str, sha: str) -> dict[str, str]:
        """Author, committer, dates, tree, parents and message of commit ``sha``; {} when
        the repository does not have it."""
        keys = "author_name author_email author_date committer_name committer_email"
        keys += " committer_date tree parents message"
        fmt = "%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%T%x00%P%x00%B"
        res = self.git(full_name, "log", "-1", f"--format={fmt}", sha, "--")
        if not res:
            return {}
        return dict(zip(keys.split(), res.stdout.rstrip("\n").split("\0"), strict=False))

    def commits_between(self, full_name: str, base: str, head: str) -> list[str]:
        """The commits on ``head`` that ``base`` does not have, oldest first."""
        out = self.must(full_name, "rev-list", "--reverse", "--topo-order", f"{base}..{head}")
        return out.split()

    def mergeable(self, full_name: str, base: str, head: str) -> bool:
        """Whether ``head`` merges into ``base`` without a conflict."""
        return bool(self.git(full_name, "merge-tree", "--write-tree", base, head))

    def commit_files(
        self,
        full_name: str,
        branch: str,
        files: Mapping[str, str | bytes],
        message: str,
        *,
        author: str = "octocat",
        delete: Sequence[str] = (),
        start: str | None = None,
    ) -> str:
        """One commit on ``branch`` that writes ``files`` and deletes ``delete``; the new
        tip. A missing branch starts at ``start`` (a commit; None: a root commit). The ref
        moves by compare-and-swap, so a concurrent push is never lost silently."""
        old = self.branch_sha(full_name, branch)
        parent = old or start
        with tempfile.TemporaryDirectory(prefix="fake-gh-") as tmp:
            # A push's commits are the pusher's own: author and committer alike.
            person = identity(author)
            env = {
                "GIT_INDEX_FILE": str(Path(tmp) / "index"),
                **person,
                "GIT_COMMITTER_NAME": person["GIT_AUTHOR_NAME"],
                "GIT_COMMITTER_EMAIL": person["GIT_AUTHOR_EMAIL"],
            }
            self.must(full_name, "read-tree", *([parent] if parent else ["--empty"]), env=env)
            for rel, content in files.items():
                blob_file = Path(tmp) / "blob"
                data = content.encode() if isinstance(content, str) else content
                blob_file.write_bytes(data)
                blob = self.must(full_name, "hash-object", "-w", "--no-filters", str(blob_file))
                info = f"100644,{blob},{rel}"
                self.must(full_name, "update-index", "--add", "--cacheinfo", info, env=env)
            for rel in delete:
                self.must(full_name, "update-index", "--force-remove", rel, env=env)
            tree = self.must(full_name, "write-tree", env=env)
            parents = ["-p", parent] if parent else []
            sha = self.must(full_name, "commit-tree", tree, *parents, "-m", message, env=env)
        self.must(full_name, "update-ref", f"refs/heads/{branch}", sha, old or ZERO_SHA)
        return sha

    def merge(
        self, full_name: str, *, base: str, head_sha: str, method: str, message: str, author: str
    ) -> MergeOutcome:
        """Merge ``head_sha`` into branch ``base`` as GitHub's merge button does: ``squash``
        (one new commit), ``merge`` (a merge commit) or ``rebase`` (each commit copied onto
        ``base``). ``base`` moves by compare-and-swap; a conflict is a reason, not a raise."""
        base_sha = self.branch_sha(full_name, base)
        if base_sha is None:
            return MergeOutcome(None, f"Base branch {base} does not exist")
        env = {**identity(author), **COMMITTER}
        if method == "rebase":
            new = self._rebase(full_name, base_sha, head_sha, env)
        else:
            res = self.git(full_name, "merge-tree", "--write-tree", base_sha, head_sha)
            if not res:
                return MergeOutcome(None, "Pull Request is not mergeable")
            tree = res.stdout.split()[0]
            parents = ["-p", base_sha] + (["-p", head_sha] if method == "merge" else [])
            new = self.must(full_name, "commit-tree", tree, *parents, "-m", message, env=env)
        if new is None:
            return MergeOutcome(None, "Pull Request is not mergeable")
        moved = self.git(full_name, "update-ref", f"refs/heads/{base}", new, base_sha)
        if not moved:
            return MergeOutcome(None, "Base branch was modified. Review and try the merge again.")
        return MergeOutcome(new)

    def _rebase(
        self, full_name: str, base_sha: str, head_sha: str, env: Mapping[str, str]
    ) -> str | None:
        # git 2.39 has no `merge-tree --merge-base` (2.40) or `git replay` (2.44) to copy a
        # commit onto another with plumbing alone, so the copies are cherry-picked in a
        # throwaway worktree of the bare repository; its git dir, work tree and index are
        # named on every call, so no inherited GIT_* variable can point one elsewhere.
        commits = self.commits_between(full_name, base_sha, head_sha)
        with tempfile.TemporaryDirectory(prefix="fake-gh-rebase-") as tmp:
            work = Path(tmp) / "wt"
            self.must(full_name, "worktree", "add", "--detach", "--quiet", str(work), base_sha)
            try:
                gitdir = (work / ".git").read_text(encoding="utf-8").split(":", 1)[1].strip()
                wt_env = {**env, "GIT_INDEX_FILE": str(Path(gitdir) / "index")}
                where = [f"--git-dir={gitdir}", f"--work-tree={work}"]
                for sha in commits:
                    # The copy keeps its author (cherry-pick does), the committer is GitHub.
                    res = git([*where, "cherry-pick", "--allow-empty", sha], work, env=wt_env)
                    if not res:
                        git([*where, "cherry-pick", "--abort"], work, env=wt_env)
                        return None
                tip = git([*where, "rev-parse", "HEAD"], work, env=wt_env)
                return tip.stdout.strip() if tip else None
            finally:
                self.git(full_name, "worktree", "remove", "--force", str(work))
                shutil.rmtree(work, ignore_errors=True)
                self.git(full_name, "worktree", "prune")

    def http_backend(
        self,
        *,
        method: str,
        path_info: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        remote_user: str,
    ) -> CgiAnswer:
        """Run ``git http-backend`` for one request of git's smart HTTP protocol."""
        env = {
            **git_environment(),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": method,
            "PATH_INFO": path_info,
            "QUERY_STRING": query,
            "CONTENT_TYPE": headers.get("content-type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": remote_user,
            "REMOTE_ADDR": "127.0.0.1",
            # The bare repositories carry no hooks; this keeps any a test might plant idle.
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "core.hooksPath",
            "GIT_CONFIG_VALUE_0": "/dev/null",
        }
        # Protocol v2 and gzip-compressed requests are announced in headers http-backend
        # reads from these variables.
        for header, var in (
            ("git-protocol", "HTTP_GIT_PROTOCOL"),
            ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ):
            if header in headers:
                env[var] = headers[header]
        try:
            proc = subprocess.run(
                ["git", "http-backend"],
                input=body,
                env=env,
                cwd=self.root,
                capture_output=True,
                timeout=HTTP_BACKEND_TIMEOUT_S,
                check=False,
            )
        except (subprocess.TimeoutExpired, OSError) as exc:
            return CgiAnswer(500, [("Content-Type", "text/plain")], f"{exc}\n".encode())
        return parse_cgi(proc.stdout, proc.stderr)


def parse_cgi(out: bytes, err: bytes) -> CgiAnswer:
    """A CGI program's output (headers, a blank line, the body) as an HTTP answer."""
    sep = out.find(b"\r\n\r\n")
    head, body = (out[:sep], out[sep + 4 :]) if sep >= 0 else (b"", out)
    if sep < 0 and (nl := out.find(b"\n\n")) >= 0:
        head, body = out[:nl], out[nl + 2 :]
    status = 200
    headers: list[tuple[str, str]] = []
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.split()[0])
        elif name:
            headers.append((name.strip(), value.strip()))
    if not head:
        return CgiAnswer(500, [("Content-Type", "text/plain")], err or b"git http-backend failed\n")
    return CgiAnswer(status, headers, body)
