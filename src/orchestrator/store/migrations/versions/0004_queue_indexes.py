"""Indexes for /queue: deferred and blocked tasks newest first, job counts by state.

Revision ID: 0004
Revises: 0003
Create Date: hand-written

bench/api.py with 10,000 tasks and 100,000 jobs on SQLite: /queue p99 32 ms without them,
about 21 ms with them.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f("ix_tasks_state_updated_at"), "tasks", ["state", "updated_at"])
    op.create_index(op.f("ix_jobs_state_task_id"), "jobs", ["state", "task_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_jobs_state_task_id"), table_name="jobs")
    op.drop_index(op.f("ix_tasks_state_updated_at"), table_name="tasks")
