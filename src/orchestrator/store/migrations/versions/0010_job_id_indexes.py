"""Indexes by job: a job's transitions and merge results, for the API's running totals.

Revision ID: 0010
Revises: 0009
Create Date: hand-written

``api/totals.py`` counts only the jobs new since its last fold; their defer transitions and
merge results are found by job id. Without these indexes each request scanned every
transition (40,000 in bench/api.py) and every merge result.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f("ix_transitions_job_id"), "transitions", ["job_id"])
    op.create_index(op.f("ix_merge_results_job_id"), "merge_results", ["job_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_merge_results_job_id"), table_name="merge_results")
    op.drop_index(op.f("ix_transitions_job_id"), table_name="transitions")
