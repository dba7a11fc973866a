"""Honest runs: task dependencies, authors, the merge gate's own retry count, alert dedup.

Revision ID: 0005
Revises: 0004
Create Date: hand-written

Frozen like the revisions before it: every type and constraint is spelled out here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``tasks.gate_retries``, ``tasks.author``, ``jobs.fresh_start``,
    ``repos.main_seen``, alert resolution and ``task_deps``."""
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(
            sa.Column("gate_retries", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(sa.Column("author", sa.String(), nullable=True))
    with op.batch_alter_table("repos") as batch:
        batch.add_column(sa.Column("main_seen", sa.String(), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("fresh_start", sa.String(), nullable=True))
        batch.create_check_constraint(
            op.f("ck_jobs_fresh_start"), "fresh_start IN ('carry', 'patch')"
        )
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("resolved_at", sa.Float(), nullable=True))
        batch.add_column(
            sa.Column("occurrences", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )
    op.create_index(
        op.f("ix_alerts_task_id_kind_resolved_at"), "alerts", ["task_id", "kind", "resolved_at"]
    )
    op.create_table(
        "task_deps",
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("after_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "after_id", name=op.f("pk_task_deps")),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_task_deps_task_id_tasks")),
        sa.ForeignKeyConstraint(
            ["after_id"], ["tasks.id"], name=op.f("fk_task_deps_after_id_tasks")
        ),
    )
    op.create_index(op.f("ix_task_deps_after_id"), "task_deps", ["after_id"])


def downgrade() -> None:
    """Drop what ``upgrade`` added."""
    op.drop_index(op.f("ix_task_deps_after_id"), table_name="task_deps")
    op.drop_table("task_deps")
    op.drop_index(op.f("ix_alerts_task_id_kind_resolved_at"), table_name="alerts")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("occurrences")
        batch.drop_column("resolved_at")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("ck_jobs_fresh_start"), type_="check")
        batch.drop_column("fresh_start")
    with op.batch_alter_table("repos") as batch:
        batch.drop_column("main_seen")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("author")
        batch.drop_column("gate_retries")
