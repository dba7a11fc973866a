"""Forge intake: a task's issue and requester, one task per issue, webhook deliveries taken.

Revision ID: 0008
Revises: 0007
Create Date: hand-written

Frozen like the revisions before it: every type and constraint is spelled out here. A
repo's forge settings live in ``repos.options`` (``forge``, ``land``): no column for them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``tasks.requester``, ``tasks.forge_issue``, ``tasks.forge_url``, the unique
    index of (repo, issue), and ``webhook_deliveries``."""
    with op.batch_alter_table("tasks") as batch:
        # Who asked for the task (a forge issue's author); NULL: filed by hand.
        batch.add_column(sa.Column("requester", sa.String(), nullable=True))
        # The forge issue the task was filed from: its number and its web page.
        batch.add_column(sa.Column("forge_issue", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("forge_url", sa.String(), nullable=True))
    # One task per issue of a repo; NULLs are distinct, so hand-filed tasks are not limited.
    op.create_index(
        "uq_tasks_repo_id_forge_issue", "tasks", ["repo_id", "forge_issue"], unique=True
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("event", sa.String(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )


def downgrade() -> None:
    """Drop what ``upgrade`` added."""
    op.drop_table("webhook_deliveries")
    op.drop_index("uq_tasks_repo_id_forge_issue", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("forge_url")
        batch.drop_column("forge_issue")
        batch.drop_column("requester")
