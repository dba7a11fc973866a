"""Initial schema: repos, tasks, jobs, transitions, alerts.

Revision ID: 0001
Revises:
Create Date: hand-written

Written by hand and frozen: it spells out every type and constraint instead of importing
``schema.py``, so that later edits to the schema cannot change what this revision did.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SERIAL_GATE_WHERE = "state = 'running' AND serial_key IS NOT NULL"


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _in(column: str, *values: str) -> str:
    listed = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({listed})"


def upgrade() -> None:
    """Create every table, index and constraint of the first schema."""
    op.create_table(
        "repos",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("main_branch", sa.String(), server_default="main", nullable=False),
        sa.Column("remote", sa.String(), nullable=True),
        sa.Column("key_prefix", sa.String(), nullable=False),
        sa.Column("next_task_number", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("test_cmd", _json(), nullable=True),
        sa.Column("staging_cmd", _json(), nullable=True),
        sa.Column("deploy_cmd", _json(), nullable=True),
        sa.Column("health_url", sa.String(), nullable=True),
        sa.Column("stages", _json(), nullable=False),
        sa.Column("agents", _json(), nullable=False),
        sa.Column("agent_env", _json(), nullable=False),
        sa.Column("options", _json(), nullable=False),
        sa.Column("self_hosting", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repos")),
        sa.UniqueConstraint("name", name=op.f("uq_repos_name")),
        sa.UniqueConstraint("key_prefix", name=op.f("uq_repos_key_prefix")),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("stage", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("reasons", _json(), nullable=False),
        sa.Column("developer_retries", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("infra_retries", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.ForeignKeyConstraint(["repo_id"], ["repos.id"], name=op.f("fk_tasks_repo_id_repos")),
        sa.UniqueConstraint("key", name=op.f("uq_tasks_key")),
        sa.UniqueConstraint("repo_id", "number", name=op.f("uq_tasks_repo_id_number")),
        sa.CheckConstraint(
            _in("state", "active", "deferred", "blocked", "done", "cancelled"),
            name=op.f("ck_tasks_state"),
        ),
    )
    op.create_index(op.f("ix_tasks_state_stage"), "tasks", ["state", "stage"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(), nullable=False),
        sa.Column("agent", sa.String(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=True),
        sa.Column("verdict", sa.String(), nullable=True),
        sa.Column("reasons", _json(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("pgid", sa.Integer(), nullable=True),
        sa.Column("host", sa.String(), nullable=True),
        sa.Column("lease_owner", sa.String(), nullable=True),
        sa.Column("lease_expires_at", sa.Float(), nullable=True),
        sa.Column("not_before", sa.Float(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("serial_key", sa.String(), nullable=True),
        sa.Column("log_path", sa.String(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("tokens_in", sa.Integer(), nullable=True),
        sa.Column("tokens_out", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_jobs_task_id_tasks")),
        sa.UniqueConstraint(
            "task_id", "stage", "attempt", name=op.f("uq_jobs_task_id_stage_attempt")
        ),
        sa.CheckConstraint(
            _in("state", "queued", "running", "finished"), name=op.f("ck_jobs_state")
        ),
        sa.CheckConstraint(
            _in("outcome", "completed", "timeout", "crashed", "lock-busy", "not-started"),
            name=op.f("ck_jobs_outcome"),
        ),
        sa.CheckConstraint(_in("verdict", "PASS", "FAIL"), name=op.f("ck_jobs_verdict")),
    )
    op.create_index(op.f("ix_jobs_state_not_before"), "jobs", ["state", "not_before"])
    op.create_index(
        op.f("uq_jobs_running_serial_key"),
        "jobs",
        ["serial_key"],
        unique=True,
        sqlite_where=sa.text(SERIAL_GATE_WHERE),
        postgresql_where=sa.text(SERIAL_GATE_WHERE),
    )
    op.create_table(
        "transitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("from_stage", sa.String(), nullable=True),
        sa.Column("to_stage", sa.String(), nullable=True),
        sa.Column("from_state", sa.String(), nullable=True),
        sa.Column("to_state", sa.String(), nullable=True),
        sa.Column("reasons", _json(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transitions")),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_transitions_task_id_tasks")
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_transitions_job_id_jobs")),
        sa.CheckConstraint(
            _in(
                "kind",
                "create",
                "advance",
                "rollback",
                "defer",
                "block",
                "done",
                "cancel",
                "retry",
                "approve",
            ),
            name=op.f("ck_transitions_kind"),
        ),
    )
    op.create_index(op.f("ix_transitions_task_id"), "transitions", ["task_id"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("repo_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("severity", sa.String(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("reasons", _json(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("delivered_at", sa.Float(), nullable=True),
        sa.Column("delivery_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("acknowledged_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_alerts_task_id_tasks")),
        sa.ForeignKeyConstraint(["repo_id"], ["repos.id"], name=op.f("fk_alerts_repo_id_repos")),
        sa.CheckConstraint(
            _in("severity", "info", "warning", "critical"), name=op.f("ck_alerts_severity")
        ),
    )
    op.create_index(op.f("ix_alerts_delivered_at"), "alerts", ["delivered_at"])


def downgrade() -> None:
    """Drop everything, children first."""
    op.drop_table("alerts")
    op.drop_table("transitions")
    op.drop_table("jobs")
    op.drop_table("tasks")
    op.drop_table("repos")
