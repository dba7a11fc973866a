"""Pull requests made visible: each task's pull request as the landing last read it, and
what the landing saw happen to pull requests, each thing once (the /metrics counters).

Revision ID: 0009
Revises: 0008
Create Date: hand-written

Frozen like the revisions before it: every type and constraint is spelled out here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    """Add ``pull_requests`` and ``pull_events``."""
    op.create_table(
        "pull_requests",
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(), nullable=False),
        sa.Column("head_sha", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        # [{name, state, summary, required, details_url}] on head_sha.
        sa.Column("checks", _json(), nullable=False),
        # [{id, author, state, commit_sha}], oldest first.
        sa.Column("reviews", _json(), nullable=False),
        sa.Column("merged_sha", sa.String(), nullable=True),
        sa.Column("opened_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("merged_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_pull_requests_task_id_tasks")
        ),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_pull_requests")),
        sa.CheckConstraint(
            "state IN ('open', 'merged', 'closed')", name=op.f("ck_pull_requests_state")
        ),
    )
    op.create_table(
        "pull_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        # What makes the event one: a head SHA, a review id, or "".
        sa.Column("seen", sa.String(), nullable=False),
        # A check's name, a reviewer, or "".
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_pull_events_task_id_tasks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pull_events")),
        sa.UniqueConstraint(
            "task_id",
            "number",
            "kind",
            "seen",
            "name",
            name=op.f("uq_pull_events_task_id_number_kind_seen_name"),
        ),
        sa.CheckConstraint(
            "kind IN ('opened', 'merged', 'check-failed', 'changes-requested')",
            name=op.f("ck_pull_events_kind"),
        ),
    )


def downgrade() -> None:
    """Drop what ``upgrade`` added."""
    op.drop_table("pull_events")
    op.drop_table("pull_requests")
