"""One module per revision, applied in order by Alembic (this file is not a revision)."""
