"""How the fake GitHub's records read as JSON: the shapes of GitHub's REST API, with every
field githubkit's models require, so a client parses the fake's answers as it parses
GitHub's (the tests check each against githubkit's model)."""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.forge.fake_github_model import (
    FakeCheckRun,
    FakeComment,
    FakeIssue,
    FakeProtection,
    FakePull,
    FakeRepo,
    FakeReview,
    FakeReviewComment,
    FakeStatus,
    Json,
    stamp,
)

DOCS_URL = "https://docs.github.com/rest"


def error_body(status: int, message: str, docs: str = DOCS_URL) -> Json:
    """GitHub's error body."""
    return {"message": message, "documentation_url": docs, "status": str(status)}


def user_json(base: str, login: str) -> Json:
    """A ``SimpleUser``; ids are stable per login."""
    uid = 1000 + sum(login.encode()) * 31 % 100_000
    api = f"{base}/users/{login}"
    return {
        "login": login,
        "id": uid,
        "node_id": f"U_{uid}",
        "avatar_url": f"{base}/avatars/{login}",
        "gravatar_id": "",
        "url": api,
        "html_url": f"{base}/{login}",
        "followers_url": f"{api}/followers",
        "following_url": f"{api}/following{{/other_user}}",
        "gists_url": f"{api}/gists{{/gist_id}}",
        "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{api}/subscriptions",
        "organizations_url": f"{api}/orgs",
        "repos_url": f"{api}/repos",
        "events_url": f"{api}/events{{/privacy}}",
        "received_events_url": f"{api}/received_events",
        "type": "Bot" if login.endswith("[bot]") else "User",
        "site_admin": False,
        "user_view_type": "public",
    }


_REPO_URLS = """
archive_url:/{archive_format}{/ref} assignees_url:/assignees{/user}
blobs_url:/git/blobs{/sha} branches_url:/branches{/branch}
collaborators_url:/collaborators{/collaborator} comments_url:/comments{/number}
commits_url:/commits{/sha} compare_url:/compare/{base}...{head}
contents_url:/contents/{+path} contributors_url:/contributors deployments_url:/deployments
downloads_url:/downloads events_url:/events forks_url:/forks
git_commits_url:/git/commits{/sha} git_refs_url:/git/refs{/sha} git_tags_url:/git/tags{/sha}
hooks_url:/hooks issue_comment_url:/issues/comments{/number}
issue_events_url:/issues/events{/number} issues_url:/issues{/number} keys_url:/keys{/key_id}
labels_url:/labels{/name} languages_url:/languages merges_url:/merges
milestones_url:/milestones{/number} notifications_url:/notifications{?since,all,participating}
pulls_url:/pulls{/number} releases_url:/releases{/id} stargazers_url:/stargazers
statuses_url:/statuses/{sha} subscribers_url:/subscribers subscription_url:/subscription
tags_url:/tags teams_url:/teams trees_url:/git/trees{/sha}
"""


def repo_json(base: str, repo: FakeRepo) -> Json:
    """A ``Repository`` (which also satisfies ``MinimalRepository``)."""
    api = f"{base}/repos/{repo.full_name}"
    out: Json = {
        "id": repo.id,
        "node_id": f"R_{repo.id}",
        "name": repo.name,
        "full_name": repo.full_name,
        "private": True,
        "owner": user_json(base, repo.owner),
        "html_url": f"{base}/{repo.full_name}",
        "description": None,
        "fork": False,
        "url": api,
        "git_url": f"{base}/{repo.full_name}.git",
        "ssh_url": f"git@fake-github:{repo.full_name}.git",
        "clone_url": f"{base}/{repo.full_name}.git",
        "svn_url": f"{base}/{repo.full_name}",
        "mirror_url": None,
        "homepage": None,
        "language": None,
        "license": None,
        "forks": 0,
        "forks_count": 0,
        "stargazers_count": 0,
        "watchers_count": 0,
        "watchers": 0,
        "size": 0,
        "default_branch": repo.default_branch,
        "open_issues_count": sum(1 for i in repo.issues.values() if i.state == "open"),
        "open_issues": sum(1 for i in repo.issues.values() if i.state == "open"),
        "has_pages": False,
        "has_issues": True,
        "has_projects": False,
        "has_wiki": False,
        "has_downloads": False,
        "has_discussions": False,
        "allow_forking": False,
        "is_template": False,
        "web_commit_signoff_required": False,
        "topics": [],
        "subscribers_count": 0,
        "network_count": 0,
        "disabled": False,
        "archived": False,
        "visibility": "private",
        "pushed_at": stamp(repo.created_at),
        "created_at": stamp(repo.created_at),
        "updated_at": stamp(repo.created_at),
    }
    for item in _REPO_URLS.split():
        key, _, tail = item.partition(":")
        out[key] = api + tail
    return out


def reactions_json(url: str) -> Json:
    """A ``ReactionRollup`` with no reactions."""
    kinds = ("+1", "-1", "laugh", "confused", "heart", "hooray", "eyes", "rocket")
    return {"url": f"{url}/reactions", "total_count": 0, **dict.fromkeys(kinds, 0)}


def label_json(base: str, repo: FakeRepo, name: str) -> Json:
    """A label of the repository (ids stable per name)."""
    lid = 5000 + sum(name.encode()) * 17 % 100_000
    return {
        "id": lid,
        "node_id": f"LA_{lid}",
        "url": f"{base}/repos/{repo.full_name}/labels/{name}",
        "name": name,
        "description": None,
        "color": "ededed",
        "default": False,
        "archived_at": None,
        "archived_by": None,
    }


def issue_json(base: str, repo: FakeRepo, issue: FakeIssue) -> Json:
    """An ``Issue``; a pull request's carries the ``pull_request`` key, as on GitHub."""
    api = f"{base}/repos/{repo.full_name}/issues/{issue.number}"
    kind = "pull" if issue.is_pull else "issues"
    out: Json = {
        "id": issue.id,
        "node_id": f"I_{issue.id}",
        "url": api,
        "repository_url": f"{base}/repos/{repo.full_name}",
        "labels_url": f"{api}/labels{{/name}}",
        "comments_url": f"{api}/comments",
        "events_url": f"{api}/events",
        "html_url": f"{base}/{repo.full_name}/{kind}/{issue.number}",
        "number": issue.number,
        "state": issue.state,
        "state_reason": "completed" if issue.state == "closed" else None,
        "title": issue.title,
        "body": issue.body,
        "user": user_json(base, issue.author),
        "labels": [label_json(base, repo, name) for name in issue.labels],
        "assignee": None,
        "assignees": [],
        "milestone": None,
        "locked": False,
        "active_lock_reason": None,
        "reactions": reactions_json(api),
        "performed_via_github_app": None,
        "comments": len(issue.comments),
        "closed_at": stamp(issue.closed_at),
        "created_at": stamp(issue.created_at),
        "updated_at": stamp(issue.updated_at),
        "author_association": "OWNER" if issue.author == repo.owner else "CONTRIBUTOR",
    }
    pull = repo.pulls.get(issue.number)
    if pull is not None:
        web = f"{base}/{repo.full_name}/pull/{issue.number}"
        out["pull_request"] = {
            "url": f"{base}/repos/{repo.full_name}/pulls/{issue.number}",
            "html_url": web,
            "diff_url": f"{web}.diff",
            "patch_url": f"{web}.patch",
            "merged_at": stamp(pull.merged_at),
        }
    return out


def comment_json(base: str, repo: FakeRepo, number: int, comment: FakeComment) -> Json:
    """An ``IssueComment``."""
    api = f"{base}/repos/{repo.full_name}"
    return {
        "id": comment.id,
        "node_id": f"IC_{comment.id}",
        "url": f"{api}/issues/comments/{comment.id}",
        "html_url": f"{base}/{repo.full_name}/issues/{number}#issuecomment-{comment.id}",
        "issue_url": f"{api}/issues/{number}",
        "body": comment.body,
        "user": user_json(base, comment.author),
        "created_at": stamp(comment.created_at),
        "updated_at": stamp(comment.created_at),
        "author_association": "OWNER" if comment.author == repo.owner else "CONTRIBUTOR",
        "reactions": reactions_json(f"{api}/issues/comments/{comment.id}"),
        "performed_via_github_app": None,
    }


def _branch_json(base: str, repo: FakeRepo, ref: str, sha: str) -> Json:
    return {
        "label": f"{repo.owner}:{ref}",
        "ref": ref,
        "sha": sha,
        "user": user_json(base, repo.owner),
        "repo": repo_json(base, repo),
    }


def pull_json(base: str, repo: FakeRepo, pull: FakePull, *, mergeable: bool | None) -> Json:
    """A ``PullRequest`` (and, being a superset, a ``PullRequestSimple``)."""
    issue = pull.issue
    api = f"{base}/repos/{repo.full_name}"
    self_url = f"{api}/pulls/{issue.number}"
    web = f"{base}/{repo.full_name}/pull/{issue.number}"
    links = {
        "self": self_url,
        "html": web,
        "issue": f"{api}/issues/{issue.number}",
        "comments": f"{api}/issues/{issue.number}/comments",
        "review_comments": f"{self_url}/comments",
        "review_comment": f"{api}/pulls/comments{{/number}}",
        "commits": f"{self_url}/commits",
        "statuses": f"{api}/statuses/{pull.head_sha}",
    }
    state = "closed" if pull.merged else issue.state
    return {
        "url": self_url,
        "id": pull.id,
        "node_id": f"PR_{pull.id}",
        "html_url": web,
        "diff_url": f"{web}.diff",
        "patch_url": f"{web}.patch",
        "issue_url": links["issue"],
        "commits_url": links["commits"],
        "review_comments_url": links["review_comments"],
        "review_comment_url": links["review_comment"],
        "comments_url": links["comments"],
        "statuses_url": links["statuses"],
        "number": issue.number,
        "state": state,
        "locked": False,
        "title": issue.title,
        "user": user_json(base, issue.author),
        "body": issue.body,
        "labels": [label_json(base, repo, name) for name in issue.labels],
        "milestone": None,
        "active_lock_reason": None,
        "created_at": stamp(issue.created_at),
        "updated_at": stamp(issue.updated_at),
        "closed_at": stamp(issue.closed_at),
        "merged_at": stamp(pull.merged_at),
        "merge_commit_sha": pull.merge_commit_sha,
        "assignee": None,
        "assignees": [],
        "requested_reviewers": [],
        "requested_teams": [],
        "head": _branch_json(base, repo, pull.head_ref, pull.head_sha),
        "base": _branch_json(base, repo, pull.base_ref, pull.base_sha),
        "_links": {k: {"href": v} for k, v in links.items()},
        "author_association": "OWNER" if issue.author == repo.owner else "CONTRIBUTOR",
        "auto_merge": None,
        "draft": False,
        "merged": pull.merged,
        "mergeable": mergeable,
        "rebaseable": mergeable,
        "mergeable_state": "clean" if mergeable else ("unknown" if mergeable is None else "dirty"),
        "merged_by": user_json(base, repo.owner) if pull.merged else None,
        "comments": len(issue.comments),
        "review_comments": sum(len(r.comments) for r in repo.reviews if r.number == issue.number),
        "maintainer_can_modify": False,
        "commits": 1,
        "additions": 0,
        "deletions": 0,
        "changed_files": 0,
    }


def status_json(base: str, repo: FakeRepo, status: FakeStatus) -> Json:
    """A ``SimpleCommitStatus`` (also a ``Status``)."""
    return {
        "id": status.id,
        "node_id": f"SC_{status.id}",
        "url": f"{base}/repos/{repo.full_name}/statuses/{status.sha}",
        "state": status.state,
        "description": status.description,
        "target_url": status.target_url,
        "context": status.context,
        "avatar_url": None,
        "created_at": stamp(status.created_at),
        "updated_at": stamp(status.created_at),
        "required": None,
        "creator": user_json(base, repo.owner),
    }


def commit_json(base: str, repo: FakeRepo, sha: str, info: Mapping[str, str]) -> Json:
    """A commit as a ``status`` webhook carries it; ``info`` from ``BareRepos.commit_info``
    (empty when the fake's repository does not have ``sha``)."""
    api = f"{base}/repos/{repo.full_name}"

    def person(kind: str) -> Json:
        return {
            "name": info.get(f"{kind}_name", "unknown"),
            "email": info.get(f"{kind}_email", "unknown@example.invalid"),
            "date": info.get(f"{kind}_date", "1970-01-01T00:00:00Z"),
        }

    parents = info.get("parents", "").split()
    return {
        "sha": sha,
        "node_id": f"C_{sha[:12]}",
        "url": f"{api}/commits/{sha}",
        "html_url": f"{base}/{repo.full_name}/commit/{sha}",
        "comments_url": f"{api}/commits/{sha}/comments",
        "author": None,
        "committer": None,
        "parents": [
            {
                "sha": p,
                "url": f"{api}/commits/{p}",
                "html_url": f"{base}/{repo.full_name}/commit/{p}",
            }
            for p in parents
        ],
        "commit": {
            "author": person("author"),
            "committer": person("committer"),
            "message": info.get("message", ""),
            "tree": {
                "sha": info.get("tree", "0" * 40),
                "url": f"{api}/git/trees/{info.get('tree', '')}",
            },
            "url": f"{api}/git/commits/{sha}",
            "comment_count": 0,
            "verification": {
                "verified": False,
                "reason": "unsigned",
                "signature": None,
                "payload": None,
                "verified_at": None,
            },
        },
    }


def combined_state(states: list[str]) -> str:
    """GitHub's combined state: failure if any failed or errored, pending if any is
    pending or there is none, success when every one succeeded."""
    if any(s in ("failure", "error") for s in states):
        return "failure"
    if not states or any(s == "pending" for s in states):
        return "pending"
    return "success"


def check_run_json(base: str, repo: FakeRepo, run: FakeCheckRun) -> Json:
    """A ``CheckRun``."""
    api = f"{base}/repos/{repo.full_name}/check-runs/{run.id}"
    return {
        "id": run.id,
        "head_sha": run.sha,
        "node_id": f"CR_{run.id}",
        "external_id": "",
        "url": api,
        "html_url": f"{base}/{repo.full_name}/runs/{run.id}",
        "details_url": run.details_url or f"{base}/{repo.full_name}/runs/{run.id}",
        "status": run.status,
        "conclusion": run.conclusion,
        "started_at": stamp(run.started_at),
        "completed_at": stamp(run.completed_at),
        "output": {
            "title": run.title,
            "summary": run.summary,
            "text": run.text,
            "annotations_count": 0,
            "annotations_url": f"{api}/annotations",
        },
        "name": run.name,
        "check_suite": {"id": run.id},
        "app": None,
        "pull_requests": [],
    }


def review_json(base: str, repo: FakeRepo, review: FakeReview) -> Json:
    """A ``PullRequestReview``."""
    pull_url = f"{base}/repos/{repo.full_name}/pulls/{review.number}"
    web = f"{base}/{repo.full_name}/pull/{review.number}#pullrequestreview-{review.id}"
    return {
        "id": review.id,
        "node_id": f"PRR_{review.id}",
        "user": user_json(base, review.author),
        "body": review.body,
        "state": review.state,
        "html_url": web,
        "pull_request_url": pull_url,
        "_links": {"html": {"href": web}, "pull_request": {"href": pull_url}},
        "submitted_at": stamp(review.submitted_at),
        "commit_id": review.commit_sha,
        "author_association": "COLLABORATOR",
    }


def review_comment_json(base: str, repo: FakeRepo, number: int, c: FakeReviewComment) -> Json:
    """A ``PullRequestReviewComment``."""
    api = f"{base}/repos/{repo.full_name}/pulls/comments/{c.id}"
    pull_url = f"{base}/repos/{repo.full_name}/pulls/{number}"
    web = f"{base}/{repo.full_name}/pull/{number}#discussion_r{c.id}"
    review = next((r for r in repo.reviews if r.id == c.review_id), None)
    return {
        "url": api,
        "pull_request_review_id": c.review_id,
        "id": c.id,
        "node_id": f"PRRC_{c.id}",
        "diff_hunk": "@@ -1 +1 @@",
        "path": c.path,
        "commit_id": c.commit_sha,
        "original_commit_id": c.commit_sha,
        "user": user_json(base, review.author if review else repo.owner),
        "body": c.body,
        "created_at": stamp(c.created_at),
        "updated_at": stamp(c.created_at),
        "html_url": web,
        "pull_request_url": pull_url,
        "author_association": "COLLABORATOR",
        "_links": {
            "self": {"href": api},
            "html": {"href": web},
            "pull_request": {"href": pull_url},
        },
        "line": c.line,
        "original_line": c.line,
        "side": "RIGHT",
        "subject_type": "line" if c.line is not None else "file",
    }


def protection_json(base: str, repo: FakeRepo, branch: str, prot: FakeProtection) -> Json:
    """A ``BranchProtection``."""
    url = f"{base}/repos/{repo.full_name}/branches/{branch}/protection"
    out: Json = {
        "url": url,
        "required_status_checks": {
            "url": f"{url}/required_status_checks",
            "strict": False,
            "contexts": list(prot.contexts),
            "contexts_url": f"{url}/required_status_checks/contexts",
            "checks": [{"context": c, "app_id": None} for c in prot.contexts],
        },
        "enforce_admins": {"url": f"{url}/enforce_admins", "enabled": False},
        "required_linear_history": {"enabled": False},
        "allow_force_pushes": {"enabled": False},
        "allow_deletions": {"enabled": False},
    }
    if prot.approvals > 0:
        out["required_pull_request_reviews"] = {
            "url": f"{url}/required_pull_request_reviews",
            "dismiss_stale_reviews": False,
            "require_code_owner_reviews": False,
            "required_approving_review_count": prot.approvals,
            "require_last_push_approval": False,
        }
    return out
