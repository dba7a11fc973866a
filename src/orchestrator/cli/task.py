"""`orch task add|list|show|cancel|retry|approve`: tasks and their history."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator import money, taskdir
from orchestrator.cli._common import (
    ago,
    console,
    engine,
    fail,
    plain,
    print_json,
    read_input_file,
    run,
    settings,
    spent_of,
)

if TYPE_CHECKING:
    from rich.text import Text

    from orchestrator.store.rows import TaskRow

app = typer.Typer(help="File, inspect and steer tasks.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def task_summary(t: TaskRow, repo_name: str) -> dict[str, Any]:
    """A task as listed by `task list --json`."""
    return {
        "key": t.key,
        "repo": repo_name,
        "title": t.title,
        "stage": t.stage,
        "state": t.state,
        "reasons": list(t.reasons or []),
        "developer_retries": t.developer_retries,
        "infra_retries": t.infra_retries,
        "author": t.author,
        "requester": t.requester,
        "forge_issue": t.forge_issue,
        "forge_url": t.forge_url,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
    }


@app.command("add")
def add(
    repo: Annotated[str, typer.Argument(help="The repo the task is for.")],
    title: Annotated[str, typer.Argument(help="One-line title.")],
    body: Annotated[str | None, typer.Option(help="The task's description.")] = None,
    body_file: Annotated[
        Path | None, typer.Option("--body-file", help="Read the description from a file.")
    ] = None,
    patch: Annotated[
        Path | None, typer.Option(help="A patch for the `patch` developer to apply.")
    ] = None,
    after: Annotated[
        list[str] | None,
        typer.Option(
            "--after",
            metavar="KEY[,KEY]",
            help="Start only once these tasks are done (their change on main). Repeatable.",
        ),
    ] = None,
    author: Annotated[
        str | None,
        typer.Option(help="'Name <email>': the author of the task's commit on main."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """File a task; prints its key."""
    from orchestrator.task_ops import add_task

    if body is not None and body_file is not None:
        fail("give --body or --body-file, not both")
    # Repeatable and comma-separated alike; an empty piece is refused as no key.
    after_keys = [piece for value in after or () for piece in value.split(",")]

    def go() -> Any:
        text = body or ""
        if body_file is not None:
            text = read_input_file(body_file, "--body-file").decode("utf-8", errors="replace")
        patch_bytes = read_input_file(patch, "--patch") if patch is not None else None
        return add_task(
            engine(), settings(), repo, title, text, patch_bytes, after=after_keys, author=author
        )

    new = run(go)
    if as_json:
        print_json(
            {**task_summary(new.task, repo), "after": list(new.after), "folder": str(new.folder)}
        )
        return
    typer.echo(new.task.key)


@app.command("list")
def list_(
    repo: Annotated[str | None, typer.Option(help="Only this repo's tasks.")] = None,
    state: Annotated[str | None, typer.Option(help="Only tasks in this state.")] = None,
    stage: Annotated[str | None, typer.Option(help="Only tasks at this stage.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List tasks, newest last."""
    from orchestrator.domain.stages import State, parse_stage
    from orchestrator.repo_ops import require_repo
    from orchestrator.store import queries

    def load() -> list[dict[str, Any]]:
        if state is not None and state not in {s.value for s in State}:
            fail(f"unknown state {state!r} (known: {', '.join(s.value for s in State)})")
        stage_name = parse_stage(stage).value if stage is not None else None
        with engine().connect() as conn:
            repo_id = require_repo(conn, repo).id if repo is not None else None
            names = {r.id: r.name for r in queries.list_repos(conn)}
            rows = queries.list_tasks(conn, repo_id=repo_id, state=state, stage=stage_name)
            return [task_summary(t, names.get(t.repo_id, "?")) for t in rows]

    tasks = run(load)
    if as_json:
        print_json(tasks)
        return
    if not tasks:
        console.print("no tasks: `orch task add REPO TITLE`")
        return
    now = time.time()
    from rich.table import Table

    table = Table("key", "repo", "stage", "state", "title", "updated", "last reason")
    for t in tasks:
        last = t["reasons"][-1] if t["reasons"] else ""
        table.add_row(
            t["key"],
            plain(t["repo"]),
            t["stage"],
            t["state"],
            plain(t["title"]),
            ago(t["updated_at"], now),
            plain(last),
        )
    console.print(table)


@app.command("show")
def show(
    key: Annotated[str, typer.Argument(help="Task key, e.g. DEMO-7.")],
    as_json: JsonFlag = False,
) -> None:
    """Show a task: stage, state, jobs, artifacts and history with reasons."""
    from orchestrator.store import dependencies, pulls, queries, spend
    from orchestrator.store import jobs as jobq
    from orchestrator.task_ops import require_task, task_waiting_on, waiting_text

    def load() -> dict[str, Any]:
        st = settings()
        with engine().connect() as conn:
            t = require_task(conn, key)
            repo = queries.get_repo_by_id(conn, t.repo_id)
            history = queries.list_transitions(conn, t.id)
            jobs = queries.list_jobs(conn, task_id=t.id)
            deps = dependencies.deps_of(conn, t.id)
            waiting = task_waiting_on(conn, t)
            recorded = jobq.recorded_artifacts(conn, t.id)
            spent = spend.task_spend(conn, t.id)
            pull = pulls.get_pull(conn, t.id)
        folder = taskdir.task_dir(st.tasks_dir, t.key)
        ours, foreign = taskdir.split_artifacts(folder, recorded)
        return {
            **task_summary(t, repo.name if repo else "?"),
            "after": [{"key": d.key, "state": d.state} for d in deps],
            "waiting_on": [{"key": d.key, "state": d.state} for d in waiting],
            "waiting": waiting_text(waiting),
            "body": t.body,
            "folder": str(folder),
            "artifacts": ours,
            "not_written_by_pipeline": foreign,
            "history": [
                {
                    "kind": h.kind,
                    "from_stage": h.from_stage,
                    "to_stage": h.to_stage,
                    "from_state": h.from_state,
                    "to_state": h.to_state,
                    "reasons": list(h.reasons or []),
                    "actor": h.actor,
                    "at": h.at,
                }
                for h in history
            ],
            "jobs": [
                {
                    "id": j.id,
                    "stage": j.stage,
                    "agent": j.agent,
                    "attempt": j.attempt,
                    "state": j.state,
                    "outcome": j.outcome,
                    "verdict": j.verdict,
                    "exit_code": j.exit_code,
                    "reasons": list(j.reasons or []),
                    "log_path": j.log_path,
                    "started_at": j.started_at,
                    "finished_at": j.finished_at,
                    "cost_usd": j.cost_usd,
                    "tokens_in": j.tokens_in,
                    "tokens_out": j.tokens_out,
                }
                for j in jobs
            ],
            # As `GET /tasks/{key}` has it: what the per-task budget counts.
            "spend": {
                "cost_usd": spent.cost_usd,
                "tokens_in": spent.tokens_in,
                "tokens_out": spent.tokens_out,
                "jobs_with_cost": spent.jobs_with_cost,
                "budget_usd": money.budget_or_none(st.llm_budget_per_task_usd),
            },
            "pull_request": None if pull is None else pull.view(),
        }

    data = run(load)
    if as_json:
        print_json(data)
        return
    from rich.table import Column, Table
    from rich.text import Text

    console.print(
        Text.assemble(
            (data["key"], "bold"), " ", plain(data["title"]), "  (", plain(data["repo"]), ")"
        ),
        soft_wrap=True,
    )
    console.print(
        f"stage [cyan]{data['stage']}[/cyan]  state [cyan]{data['state']}[/cyan]  "
        f"developer retries {data['developer_retries']}  "
        f"infra retries {data['infra_retries']}"
    )
    console.print(spend_line(data["spend"]), highlight=False)
    if data["author"]:
        console.print(Text.assemble("author ", plain(data["author"])), soft_wrap=True)
    if data["requester"] or data["forge_url"]:
        asked = Text.assemble("requested by ", plain(data["requester"] or "?"))
        if data["forge_url"]:
            asked.append_text(Text.assemble(" in ", plain(data["forge_url"])))
        console.print(asked, soft_wrap=True)
    now = time.time()
    if data["pull_request"]:
        print_pull(data["pull_request"], now)
    if data["after"]:
        done = ", ".join(f"{d['key']} ({d['state']})" for d in data["after"])
        console.print(f"after {done}", highlight=False)
    if data["waiting"]:
        console.print(Text(data["waiting"], style="yellow"), soft_wrap=True)
    console.print(Text.assemble("folder ", plain(data["folder"])), soft_wrap=True)
    if data["artifacts"]:
        console.print("artifacts: " + ", ".join(data["artifacts"]))
    if data["not_written_by_pipeline"]:
        listed = ", ".join(data["not_written_by_pipeline"])
        console.print(f"{taskdir.NOT_OURS} (not results; no gate reads them): {listed}")
    hist = Table("when", "kind", "from", "to", "reasons", title="history")
    for h in data["history"]:
        hist.add_row(
            ago(h["at"], now),
            h["kind"],
            f"{h['from_stage'] or '-'}/{h['from_state'] or '-'}",
            f"{h['to_stage']}/{h['to_state']}",
            plain("\n".join(h["reasons"])),
        )
    console.print(hist)
    if data["jobs"]:
        jobs = Table(
            "job",
            "stage",
            "agent",
            "attempt",
            "state",
            "outcome",
            "verdict",
            # Amounts are never cut short: at 80 columns the words give way instead.
            Column("cost", no_wrap=True),
            Column("tokens\nin/out", no_wrap=True),
            title="jobs",
        )
        for j in data["jobs"]:
            jobs.add_row(
                str(j["id"]),
                j["stage"],
                plain(j["agent"]),
                str(j["attempt"]),
                j["state"],
                j["outcome"] or "-",
                j["verdict"] or "-",
                money.usd(j["cost_usd"]),
                money.tokens_in_out(j["tokens_in"], j["tokens_out"]),
            )
        console.print(jobs)


def print_pull(pr: dict[str, Any], now: float) -> None:
    """The task's pull request as the landing last read it: a line with its link, then
    each check on its head (the required ones first) and each review."""
    from rich.table import Table
    from rich.text import Text

    head = pr["head_sha"][:12]
    line = Text.assemble(
        f"pull request #{pr['number']} ",
        (pr["state"], "bold"),
        " ",
        plain(pr["url"]),
        f"  head {head}, read {ago(pr['updated_at'], now)}",
    )
    if pr["merged_sha"]:
        line.append(f", merged as {pr['merged_sha'][:12]}")
    console.print(line, soft_wrap=True)
    if pr["checks"]:
        checks = Table("check", "required", "state", "summary", title=f"checks on {head}")
        for c in pr["checks"]:
            checks.add_row(
                plain(c["name"]), "yes" if c["required"] else "", c["state"], plain(c["summary"])
            )
        console.print(checks)
    if pr["reviews"]:
        reviews = Table("reviewer", "state", "given on", title="reviews")
        for r in pr["reviews"]:
            on = "this head" if r["on_head"] else f"an older head ({r['commit_sha'][:12]})"
            reviews.add_row(plain(r["author"]), plain(r["state"]), on)
        console.print(reviews)


def spend_line(total: dict[str, Any]) -> Text:
    """``LLM spend $0.0014 of $0.001 (140%), tokens 1,200 in / 300 out``."""
    from rich.text import Text

    return Text.assemble(
        "LLM spend ",
        spent_of(total["cost_usd"], total["budget_usd"]),
        f", tokens {money.tokens(total['tokens_in'])} in / {money.tokens(total['tokens_out'])} out",
    )


@app.command("cancel")
def cancel(
    key: Annotated[str, typer.Argument(help="Task key.")],
    reason: Annotated[str, typer.Option(help="Why, for the history.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Cancel a task; a running job is killed."""
    from orchestrator.task_ops import cancel_task

    t = run(lambda: cancel_task(engine(), key, reason=reason))
    if as_json:
        print_json({"key": t.key, "state": t.state, "stage": t.stage})
        return
    console.print(f"{t.key} cancelled")


@app.command("retry")
def retry(
    key: Annotated[str, typer.Argument(help="Task key.")],
    patch: Annotated[Path | None, typer.Option(help="A new patch; back to development.")] = None,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Back to development on a worktree rebuilt from current main "
            "(the new patch, or the branch's old change, is applied there).",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Retry a blocked or deferred task, optionally with a new patch or from a fresh main."""
    from orchestrator.task_ops import retry_task

    def go() -> TaskRow:
        patch_bytes = read_input_file(patch, "--patch") if patch is not None else None
        return retry_task(engine(), settings(), key, patch=patch_bytes, fresh=fresh)

    t = run(go)
    if as_json:
        print_json({"key": t.key, "state": t.state, "stage": t.stage})
        return
    console.print(f"{t.key} queued again at {t.stage}")


@app.command("approve")
def approve(
    key: Annotated[str, typer.Argument(help="Task key.")],
    artifact: Annotated[
        Path | None, typer.Option(help="The stage's artifact, written by a human.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Complete a blocked stage by hand; the stage's gates still run."""
    from orchestrator.task_ops import approve_task

    def go() -> TaskRow:
        data = read_input_file(artifact, "--artifact") if artifact is not None else None
        return approve_task(engine(), settings(), key, artifact=data)

    t = run(go)
    if as_json:
        print_json({"key": t.key, "state": t.state, "stage": t.stage})
        return
    console.print(f"{t.key} approved: {t.stage} will be gated")
