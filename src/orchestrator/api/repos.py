"""``GET /repos`` and ``GET /repos/{name}``: the registered repos, their pipeline and forge.

Reads, like every read here, need no token: so the commands (which may carry what a
deploy needs) and paths beyond the repo's own are left to ``orch repo show``. The forge's
settings name the token's environment variable, never the token (``repo_ops.repo_view``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from orchestrator import repo_ops
from orchestrator.api.errors import responses
from orchestrator.api.state import Api
from orchestrator.store import queries
from orchestrator.store.rows import RepoRow


class ForgeOut(BaseModel):
    """A repo's forge: where its issues come from and its pull requests go."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="github")
    repo: str = Field(description="OWNER/NAME on the forge.")
    api_url: str
    token_env: str = Field(description="The environment variable holding the token.")
    required_checks: list[str] = Field(description="[]: those branch protection requires.")
    merge_method: str
    intake_label: str = Field(description="Issues with this label become tasks.")


class RepoOut(BaseModel):
    """A registered repo, as the API shows it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    path: str
    main_branch: str
    remote: str | None
    key_prefix: str
    stages: list[str]
    agents: dict[str, str]
    self_hosting: bool
    forge: ForgeOut | None
    land: str = Field(description="push (the merge gate pushes main) or pr.")


_FIELDS = tuple(RepoOut.model_fields)


def repo_out(repo: RepoRow) -> RepoOut:
    """The API's view of a repo: the CLI's, without the commands."""
    view: dict[str, Any] = repo_ops.repo_view(repo)
    return RepoOut.model_validate({k: view[k] for k in _FIELDS})


def repos_router(api: Api) -> APIRouter:
    """The repo read routes."""
    router = api.auth_router()

    @router.get("/repos", response_model=list[RepoOut], tags=["repos"])
    def list_repos() -> list[RepoOut]:
        """Every registered repo, by name."""
        with api.reader.connect() as conn:
            return [repo_out(r) for r in queries.list_repos(conn)]

    @router.get(
        "/repos/{name}", response_model=RepoOut, responses=responses(404, 422), tags=["repos"]
    )
    def show_repo(
        name: Annotated[str, PathParam(description="The repo's name.", max_length=64)],
    ) -> RepoOut:
        """One repo, with its forge settings."""
        with api.reader.connect() as conn:
            return repo_out(repo_ops.require_repo(conn, name))

    return router
