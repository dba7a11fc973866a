"""Verdict records: the artifacts each job produced, the tests each validated tree passed.

Revision ID: 0006
Revises: 0005
Create Date: hand-written

Frozen like the revisions before it: every type and constraint is spelled out here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    """Add ``jobs.artifacts`` and ``validated_trees.passed_tests``."""
    with op.batch_alter_table("jobs") as batch:
        # {artifact name: SHA-256} of what the orchestrator recorded for this job: a
        # runner's verdict as it returned it, an agent's file as it was collected, a gate's
        # report as it wrote it.
        batch.add_column(sa.Column("artifacts", _json(), nullable=True))
    with op.batch_alter_table("validated_trees") as batch:
        # The IDs of the tests that passed on that tree (JUnit classname::name), sorted.
        batch.add_column(sa.Column("passed_tests", _json(), nullable=True))


def downgrade() -> None:
    """Drop what ``upgrade`` added."""
    with op.batch_alter_table("validated_trees") as batch:
        batch.drop_column("passed_tests")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("artifacts")
