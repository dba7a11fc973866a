"""The merge gate: validated trees and merge results.

Revision ID: 0003
Revises: 0002
Create Date: hand-written

Frozen like the revisions before it: every type and constraint is spelled out here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _in(column: str, *values: str) -> str:
    listed = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({listed})"


def upgrade() -> None:
    """Create ``validated_trees`` and ``merge_results``."""
    op.create_table(
        "validated_trees",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column("tree", sa.String(), nullable=False),
        sa.Column("test_cmd_key", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_validated_trees")),
        sa.ForeignKeyConstraint(
            ["repo_id"], ["repos.id"], name=op.f("fk_validated_trees_repo_id_repos")
        ),
        sa.UniqueConstraint(
            "repo_id",
            "tree",
            "test_cmd_key",
            name=op.f("uq_validated_trees_repo_id_tree_test_cmd_key"),
        ),
        sa.CheckConstraint(
            _in("source", "test-runner", "merge-retest"), name=op.f("ck_validated_trees_source")
        ),
    )
    op.create_table(
        "merge_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("classification", sa.String(), nullable=True),
        sa.Column("retest", sa.String(), nullable=False),
        sa.Column("merged_sha", sa.String(), nullable=True),
        sa.Column("rounds", sa.Integer(), nullable=False),
        sa.Column(
            "reasons",
            sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql"),
            nullable=False,
        ),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merge_results")),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_merge_results_task_id_tasks")
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_merge_results_job_id_jobs")),
        sa.CheckConstraint(
            _in("status", "MERGED", "CONFLICT", "RED", "INFRA"),
            name=op.f("ck_merge_results_status"),
        ),
        sa.CheckConstraint(
            _in("classification", "timeout", "red", "lock-busy", "other", "conflict"),
            name=op.f("ck_merge_results_classification"),
        ),
        sa.CheckConstraint(
            _in("retest", "ran", "skipped", "none"), name=op.f("ck_merge_results_retest")
        ),
    )
    op.create_index(op.f("ix_merge_results_task_id"), "merge_results", ["task_id"])


def downgrade() -> None:
    """Drop ``merge_results`` and ``validated_trees``."""
    op.drop_table("merge_results")
    op.drop_table("validated_trees")
