"""`orch init`, `orch status`, `orch db upgrade`, `orch config`."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator import __version__, money
from orchestrator.cli._common import ago, console, plain, print_json, run, settings, spent_of
from orchestrator.masking import masked_url

if TYPE_CHECKING:
    from rich.text import Text

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
config_app = typer.Typer(help="Render configuration files from the settings.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def init(as_json: JsonFlag = False) -> None:
    """Create the state directory, the database and the API token (idempotent)."""
    from orchestrator.api.token import load_token
    from orchestrator.private_files import private_dir
    from orchestrator.store.bootstrap import open_engine

    def go() -> dict[str, str]:
        st = settings()
        open_engine(st).dispose()
        private_dir(st.tasks_dir)
        token = load_token(st)
        return {
            "home": str(st.home),
            "database": masked_url(st.effective_database_url),
            # Where the token is, never the token.
            "api_token": token.source,
        }

    info = run(go)
    if as_json:
        print_json(info)
        return
    console.print(f"orchestrator home: {info['home']}")
    console.print(f"database: {info['database']}")
    console.print(
        plain(f"api token: {info['api_token']} (`orch serve` asks for it on every change)")
    )
    console.print("next: `orch repo add NAME PATH`")


def status(as_json: JsonFlag = False) -> None:
    """Tasks by stage and state, repos, and whether claiming is paused."""
    from orchestrator.sandbox import sandbox_state
    from orchestrator.store import breakers, control, queries, reads, spend
    from orchestrator.store.bootstrap import open_engine

    def load() -> dict[str, Any]:
        st = settings()
        with open_engine(st).connect() as conn:
            counts = queries.count_tasks_by(conn)
            repos = [r.name for r in queries.list_repos(conn)]
            # The one definition of an open alert, as the dashboard and GET /status count.
            alerts = reads.open_alert_count(conn)
            sched = reads.scheduler_state(
                conn,
                paused_by_setting=st.paused,
                in_this_process=None,
                since=time.time() - st.job_lease_s,
            )
            day = spend.day_spend(conn, since=time.time() - spend.DAY_S)
            top = spend.top_live_task_spend(conn)
            paused_in_db = control.is_paused(conn)
            models = [b.view() for b in breakers.list_backends(conn)]
        return {
            "version": __version__,
            "home": str(st.home),
            "database": masked_url(st.effective_database_url),
            # The setting or `orch pause`: either stops every claim.
            "paused": st.paused or paused_in_db,
            # Whether any worker runs jobs (a heartbeat within a lease), and what pauses it.
            "scheduler": {**dataclasses.asdict(sched), "text": sched.text},
            "repos": repos,
            "tasks": [
                {"stage": stage, "state": state, "count": n}
                for (stage, state), n in sorted(counts.items())
            ],
            "alerts": alerts,
            "backends": models,
            "sandbox": dict(zip(("state", "detail"), sandbox_state(st), strict=True)),
            # Keys as in `GET /status`'s llm_spend.
            "llm_spend": {
                "last_24h_usd": day.cost_usd,
                "last_24h_tokens_in": day.tokens_in,
                "last_24h_tokens_out": day.tokens_out,
                "day_budget_usd": money.budget_or_none(st.llm_budget_per_day_usd),
                "task_budget_usd": money.budget_or_none(st.llm_budget_per_task_usd),
                "top_tasks": [
                    {
                        "key": t.key,
                        "state": t.state,
                        "cost_usd": t.spend.cost_usd,
                        "tokens_in": t.spend.tokens_in,
                        "tokens_out": t.spend.tokens_out,
                    }
                    for t in top
                ],
            },
        }

    data = run(load)
    if as_json:
        print_json(data)
        return
    sched_text = data["scheduler"]["text"]
    console.print(
        plain(f"orchestrator {data['version']}  home {data['home']}  {sched_text}"),
        style="red" if data["scheduler"]["state"] != "running" else None,
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"repos: {', '.join(data['repos']) or '-'}   alerts: {data['alerts']}")
    box = data["sandbox"]
    if box["state"] != "on":
        console.print(f"[red]sandbox {box['state']}[/red]: {plain(box['detail'])}")
    for line in spend_lines(data["llm_spend"]):
        console.print(line, highlight=False, soft_wrap=True)
    for b in data["backends"]:
        if b["health"] != "closed":
            console.print(plain(backend_line(b)), style="red", highlight=False, soft_wrap=True)
    from rich.table import Table

    table = Table("stage", "state", "tasks")
    for row in data["tasks"]:
        table.add_row(row["stage"], row["state"], str(row["count"]))
    console.print(table if data["tasks"] else "no tasks yet")


def backend_line(b: dict[str, Any]) -> str:
    """One line on a model backend: running, or paused since when and why."""
    if b["health"] == "closed":
        return f"model backend {b['name']}: running"
    now = time.time()
    probe = b["probe_at"]
    nxt = "now" if probe is None or probe <= now else f"in {probe - now:.0f}s"
    why = "credentials rejected" if b["health"] == "credentials" else "outage"
    return (
        f"model backend {b['name']}: PAUSED ({why}) since {ago(b['opened_at'], now)}; "
        f"next probe {nxt}; last error: {b['last_error'] or '?'}"
    )


def spend_lines(got: dict[str, Any]) -> list[Text]:
    """The day's LLM spend against its budget, then the live tasks that spent most."""
    from rich.text import Text

    lines = [
        Text.assemble(
            "LLM spend, last 24 h: ",
            spent_of(got["last_24h_usd"], got["day_budget_usd"]),
            f", tokens {money.tokens(got['last_24h_tokens_in'])} in / "
            f"{money.tokens(got['last_24h_tokens_out'])} out",
        )
    ]
    if got["top_tasks"]:
        line = Text("live tasks by spend: ")
        for n, t in enumerate(got["top_tasks"]):
            line.append_text(
                Text.assemble(
                    ", " if n else "",
                    t["key"],
                    " ",
                    spent_of(t["cost_usd"], got["task_budget_usd"]),
                )
            )
        lines.append(line)
    return lines


@db_app.command("upgrade")
def db_upgrade(as_json: JsonFlag = False) -> None:
    """Migrate the database to the newest schema."""
    from orchestrator.private_files import private_dir
    from orchestrator.store import make_engine, migrate

    def go() -> dict[str, str | None]:
        st = settings()
        private_dir(st.home)
        eng = make_engine(st.effective_database_url)
        before = migrate.current_revision(eng)
        migrate.upgrade(eng)
        after = migrate.current_revision(eng)
        eng.dispose()
        return {"from": before, "to": after}

    info = run(go)
    if as_json:
        print_json(info)
        return
    console.print(f"database at revision {info['to']} (was {info['from'] or 'empty'})")


@config_app.command("env-example")
def env_example() -> None:
    """Print `.env.example`: every setting with its default."""
    from orchestrator.config_docs import render_env_example

    typer.echo(render_env_example(), nl=False)


@config_app.command("docs")
def config_docs() -> None:
    """Print `docs/configuration.md`."""
    from orchestrator.config_docs import render_configuration_md

    typer.echo(render_configuration_md(), nl=False)
