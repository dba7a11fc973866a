"""`orch init`, `orch status`, `orch db upgrade`, `orch config`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from orchestrator import __version__
from orchestrator.cli._common import console, plain, print_json, run, settings
from orchestrator.config import render_configuration_md, render_env_example
from orchestrator.store import queries

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
config_app = typer.Typer(help="Render configuration files from the settings.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def init(as_json: JsonFlag = False) -> None:
    """Create the state directory and the database (idempotent)."""
    from orchestrator.ops import open_engine

    def go() -> dict[str, str]:
        st = settings()
        open_engine(st).dispose()
        st.tasks_dir.mkdir(parents=True, exist_ok=True)
        return {"home": str(st.home), "database": _masked_url(st.effective_database_url)}

    info = run(go)
    if as_json:
        print_json(info)
        return
    console.print(f"orchestrator home: {info['home']}")
    console.print(f"database: {info['database']}")
    console.print("next: `orch repo add NAME PATH`")


def _masked_url(url: str) -> str:
    import sqlalchemy as sa

    return sa.make_url(url).render_as_string(hide_password=True)


def status(as_json: JsonFlag = False) -> None:
    """Tasks by stage and state, repos, and whether claiming is paused."""
    from orchestrator.ops import open_engine
    from orchestrator.sandbox import sandbox_state

    def load() -> dict[str, Any]:
        st = settings()
        with open_engine(st).connect() as conn:
            counts = queries.count_tasks_by(conn)
            repos = [r.name for r in queries.list_repos(conn)]
            alerts = len(queries.list_alerts(conn, limit=1000, open_only=True))
        return {
            "version": __version__,
            "home": str(st.home),
            "database": _masked_url(st.effective_database_url),
            "paused": st.paused,
            "repos": repos,
            "tasks": [
                {"stage": stage, "state": state, "count": n}
                for (stage, state), n in sorted(counts.items())
            ],
            "alerts": alerts,
            "sandbox": dict(zip(("state", "detail"), sandbox_state(st), strict=True)),
        }

    data = run(load)
    if as_json:
        print_json(data)
        return
    console.print(
        f"orchestrator {data['version']}  home {data['home']}  "
        f"{'[red]PAUSED[/red]' if data['paused'] else 'running'}"
    )
    console.print(f"repos: {', '.join(data['repos']) or '-'}   alerts: {data['alerts']}")
    box = data["sandbox"]
    if box["state"] != "on":
        console.print(f"[red]sandbox {box['state']}[/red]: {plain(box['detail'])}")
    table = Table("stage", "state", "tasks")
    for row in data["tasks"]:
        table.add_row(row["stage"], row["state"], str(row["count"]))
    console.print(table if data["tasks"] else "no tasks yet")


@db_app.command("upgrade")
def db_upgrade(as_json: JsonFlag = False) -> None:
    """Migrate the database to the newest schema."""
    from orchestrator.store import make_engine, migrate

    def go() -> dict[str, str | None]:
        st = settings()
        st.home.mkdir(parents=True, exist_ok=True)
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
    typer.echo(render_env_example(), nl=False)


@config_app.command("docs")
def config_docs() -> None:
    """Print `docs/configuration.md`."""
    typer.echo(render_configuration_md(), nl=False)
