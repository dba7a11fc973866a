"""Model backends' circuit breakers, and each running LLM job's reserved spend.

Revision ID: 0007
Revises: 0006
Create Date: hand-written

Frozen like the revisions before it: every type and constraint is spelled out here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``model_backends`` and ``jobs.reserved_usd``."""
    op.create_table(
        "model_backends",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("health", sa.String(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.Float(), nullable=True),
        sa.Column("probe_at", sa.Float(), nullable=True),
        sa.Column("probe_delay_s", sa.Float(), nullable=True),
        sa.Column("probe_job_id", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("alert_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_model_backends")),
        sa.CheckConstraint(
            "health IN ('closed', 'open', 'credentials')", name=op.f("ck_model_backends_health")
        ),
    )
    with op.batch_alter_table("jobs") as batch:
        # What a running LLM job may spend, reserved against the day budget at dispatch.
        batch.add_column(sa.Column("reserved_usd", sa.Float(), nullable=True))


def downgrade() -> None:
    """Drop what ``upgrade`` added."""
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("reserved_usd")
    op.drop_table("model_backends")
