"""`orch repo add|set|list|show`: the repositories the orchestrator manages."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli._common import console, engine, plain, print_json, run

if TYPE_CHECKING:
    from orchestrator.forge.settings import ForgeInput
    from orchestrator.store.rows import RepoRow

app = typer.Typer(help="Register and inspect managed repositories.", no_args_is_help=True)

MainOpt = Annotated[str | None, typer.Option("--main", help="Main branch (default: current).")]
RemoteOpt = Annotated[str | None, typer.Option(help="Remote to fetch from and push main to.")]
TestOpt = Annotated[
    str | None, typer.Option("--test-cmd", help="Test command, one string split like a shell.")
]
StagingOpt = Annotated[str | None, typer.Option("--staging-cmd", help="Staging command.")]
DeployOpt = Annotated[str | None, typer.Option("--deploy-cmd", help="Deploy command.")]
HealthOpt = Annotated[str | None, typer.Option("--health-url", help="Loopback health URL.")]
StagesOpt = Annotated[
    str | None, typer.Option("--stages", help="CSV of stages, e.g. development,testing,...")
]
AgentOpt = Annotated[
    list[str] | None,
    typer.Option("--agent", help="STAGE=SPEC (claude, patch, manual, test-runner, command:...)."),
]
AgentEnvOpt = Annotated[
    str | None, typer.Option("--agent-env", help="CSV of env var names passed to agents.")
]
SmokeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--smoke-url",
        help="Loopback http URL the test-runner GETs after a green suite (repeatable; '' clears).",
    ),
]
MarkerOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--regression-marker",
        help="ID:SYMBOL:PATH that main must keep; a merge dropping it is RED (repeatable; "
        "'' clears).",
    ),
]
SandboxRoOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--sandbox-ro",
        help="A path agents and suites may read in the sandbox (repeatable; '' clears).",
    ),
]
SandboxRwOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--sandbox-rw",
        help="A path agents and suites may write in the sandbox (repeatable; '' clears).",
    ),
]
ProtectedOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--protected-paths",
        help="Globs a task may not change without `orch task approve` (repeatable or a "
        "comma list; '' restores the defaults: tests, conftest.py, pytest/coverage config, CI).",
    ),
]
KeepOpt = Annotated[
    bool | None,
    typer.Option(
        "--keep-branches/--no-keep-branches",
        help="Keep a done task's orch/<KEY> branch (default: deleted once main holds it).",
    ),
]
ForgeOpt = Annotated[
    str | None,
    typer.Option(
        "--forge", help="The forge of the repo's issues and pull requests: github (none: remove)."
    ),
]
ForgeRepoOpt = Annotated[
    str | None, typer.Option("--forge-repo", help="OWNER/NAME of the repository on the forge.")
]
ForgeApiOpt = Annotated[
    str | None,
    typer.Option(
        "--forge-api-url",
        help="The forge's API (default https://api.github.com; http only to this machine).",
    ),
]
ForgeTokenOpt = Annotated[
    str | None,
    typer.Option(
        "--forge-token-env",
        help="NAME of the environment variable holding the token (default GITHUB_TOKEN); the "
        "token itself is never stored.",
    ),
]
LandOpt = Annotated[
    str | None,
    typer.Option(
        "--land", help="push: the merge gate pushes main; pr: through a pull request (a forge)."
    ),
]
ChecksOpt = Annotated[
    str | None,
    typer.Option(
        "--required-checks",
        help="CSV of checks a pull request must pass ('' : those branch protection requires).",
    ),
]
MergeMethodOpt = Annotated[
    str | None,
    typer.Option("--merge-method", help="How a pull request is merged: squash, merge or rebase."),
]
LabelOpt = Annotated[
    str | None,
    typer.Option("--intake-label", help="Issues with this label become tasks (default orch)."),
]


def _forge_input(
    forge: str | None,
    forge_repo: str | None,
    forge_api_url: str | None,
    forge_token_env: str | None,
    land: str | None,
    required_checks: str | None,
    merge_method: str | None,
    intake_label: str | None,
) -> ForgeInput:
    from orchestrator.forge.settings import ForgeInput

    return ForgeInput(
        forge=forge,
        repo=forge_repo,
        api_url=forge_api_url,
        token_env=forge_token_env,
        land=land,
        # Split as given: '' is a list of no checks (clears), not "not given".
        required_checks=required_checks.split(",") if required_checks is not None else None,
        merge_method=merge_method,
        intake_label=intake_label,
    )


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [p.strip() for p in value.split(",") if p.strip()]


def _shown(key: str, value: object) -> object:
    """A value as `orch repo show` prints it: markers as the ID:SYMBOL:PATH a user types."""
    if key == "regression_markers" and isinstance(value, list):
        return ", ".join(
            f"{m.get('task')}:{m.get('symbol')}:{m.get('path')}" if isinstance(m, dict) else str(m)
            for m in value
        )
    if key in ("smoke_urls", "sandbox_ro", "sandbox_rw", "protected_paths") and isinstance(
        value, list
    ):
        return ", ".join(str(u) for u in value)
    if key == "forge" and isinstance(value, dict):
        checks = ", ".join(value["required_checks"]) or "those branch protection requires"
        return (
            f"{value['kind']} {value['repo']} (API {value['api_url']}; token from "
            f"${value['token_env']}; intake label {value['intake_label']!r}; merge "
            f"{value['merge_method']}; checks: {checks})"
        )
    return value


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Short name of the repo.")],
    path: Annotated[Path, typer.Argument(help="Local clone (top of a git work tree).")],
    main: MainOpt = None,
    remote: RemoteOpt = None,
    test_cmd: TestOpt = None,
    staging_cmd: StagingOpt = None,
    deploy_cmd: DeployOpt = None,
    health_url: HealthOpt = None,
    stages: StagesOpt = None,
    agent: AgentOpt = None,
    agent_env: AgentEnvOpt = None,
    smoke_url: SmokeOpt = None,
    regression_marker: MarkerOpt = None,
    keep_branches: KeepOpt = None,
    sandbox_ro: SandboxRoOpt = None,
    sandbox_rw: SandboxRwOpt = None,
    protected_paths: ProtectedOpt = None,
    forge: ForgeOpt = None,
    forge_repo: ForgeRepoOpt = None,
    forge_api_url: ForgeApiOpt = None,
    forge_token_env: ForgeTokenOpt = None,
    land: LandOpt = None,
    required_checks: ChecksOpt = None,
    merge_method: MergeMethodOpt = None,
    intake_label: LabelOpt = None,
    prefix: Annotated[str | None, typer.Option(help="Task key prefix (default from name).")] = None,
    self_hosting: Annotated[
        bool, typer.Option("--self-hosting", help="This is the orchestrator's own repo.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Register a repository."""
    from orchestrator.repo_ops import RepoInput, add_repo, repo_view

    spec = RepoInput(
        main_branch=main,
        remote=remote,
        test_cmd=test_cmd,
        staging_cmd=staging_cmd,
        deploy_cmd=deploy_cmd,
        health_url=health_url,
        stages=_csv(stages),
        agents=agent or [],
        agent_env=_csv(agent_env),
        prefix=prefix,
        self_hosting=self_hosting,
        smoke_urls=smoke_url,
        regression_markers=regression_marker,
        keep_branches=keep_branches,
        sandbox_ro=sandbox_ro,
        sandbox_rw=sandbox_rw,
        protected_paths=protected_paths,
        forge=_forge_input(
            forge,
            forge_repo,
            forge_api_url,
            forge_token_env,
            land,
            required_checks,
            merge_method,
            intake_label,
        ),
    )
    repo = run(lambda: add_repo(engine(), name, path, spec))
    if as_json:
        print_json(repo_view(repo))
        return
    from rich.text import Text

    console.print(
        Text.assemble(
            "registered ",
            (repo.name, "bold"),
            " (",
            plain(repo.path),
            f"), tasks {repo.key_prefix}-<n>",
        )
    )


@app.command("set")
def set_(
    name: Annotated[str, typer.Argument(help="The repo to change.")],
    main: MainOpt = None,
    remote: RemoteOpt = None,
    test_cmd: TestOpt = None,
    staging_cmd: StagingOpt = None,
    deploy_cmd: DeployOpt = None,
    health_url: HealthOpt = None,
    stages: StagesOpt = None,
    agent: AgentOpt = None,
    agent_env: AgentEnvOpt = None,
    smoke_url: SmokeOpt = None,
    regression_marker: MarkerOpt = None,
    keep_branches: KeepOpt = None,
    sandbox_ro: SandboxRoOpt = None,
    sandbox_rw: SandboxRwOpt = None,
    protected_paths: ProtectedOpt = None,
    forge: ForgeOpt = None,
    forge_repo: ForgeRepoOpt = None,
    forge_api_url: ForgeApiOpt = None,
    forge_token_env: ForgeTokenOpt = None,
    land: LandOpt = None,
    required_checks: ChecksOpt = None,
    merge_method: MergeMethodOpt = None,
    intake_label: LabelOpt = None,
    self_hosting: Annotated[
        bool | None, typer.Option("--self-hosting/--not-self-hosting", help="Self-hosting.")
    ] = None,
    trust_main: Annotated[
        bool,
        typer.Option(
            "--trust-main",
            help="Build on main as it is now, after it was rewound outside the orchestrator.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Change a registered repository (only the options given)."""
    from orchestrator.repo_ops import RepoInput, repo_view, set_repo

    spec = RepoInput(
        main_branch=main,
        remote=remote,
        test_cmd=test_cmd,
        staging_cmd=staging_cmd,
        deploy_cmd=deploy_cmd,
        health_url=health_url,
        stages=_csv(stages),
        agents=agent or [],
        agent_env=_csv(agent_env),
        self_hosting=self_hosting,
        smoke_urls=smoke_url,
        regression_markers=regression_marker,
        keep_branches=keep_branches,
        sandbox_ro=sandbox_ro,
        sandbox_rw=sandbox_rw,
        protected_paths=protected_paths,
        trust_main=trust_main,
        forge=_forge_input(
            forge,
            forge_repo,
            forge_api_url,
            forge_token_env,
            land,
            required_checks,
            merge_method,
            intake_label,
        ),
    )
    repo = run(lambda: set_repo(engine(), name, spec))
    if as_json:
        print_json(repo_view(repo))
        return
    console.print(f"updated [bold]{repo.name}[/bold]")


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List registered repositories."""
    from orchestrator.repo_ops import repo_view
    from orchestrator.store import queries

    def load() -> list[RepoRow]:
        with engine().connect() as conn:
            return queries.list_repos(conn)

    repos = run(load)
    if as_json:
        print_json([repo_view(r) for r in repos])
        return
    from rich.table import Table

    table = Table("name", "prefix", "main", "path", "stages")
    for r in repos:
        table.add_row(r.name, r.key_prefix, plain(r.main_branch), plain(r.path), ",".join(r.stages))
    console.print(table if repos else "no repos yet: `orch repo add NAME PATH`")


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="The repo to show.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one repository's settings."""
    from orchestrator.repo_ops import repo_view, require_repo

    def load() -> RepoRow:
        with engine().connect() as conn:
            return require_repo(conn, name)

    repo = run(load)
    data = repo_view(repo)
    if as_json:
        print_json(data)
        return
    from rich.table import Table

    table = Table("field", "value", show_header=False)
    for k, v in data.items():
        table.add_row(k, "-" if v in (None, [], {}) else plain(_shown(k, v)))
    console.print(table)
