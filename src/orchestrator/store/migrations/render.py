"""How ``--autogenerate`` writes the schema's own types into a new migration.

A migration is frozen once shipped: it spells out plain SQLAlchemy types rather than import
``orchestrator.store.schema``, whose later edits would change what it did. Alembic would
write a TypeDecorator of ours as ``orchestrator.store.schema.<Class>(...)``; these are the
plain spellings (``env.py`` hands ``render_item`` to Alembic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from orchestrator.store.schema import JSON, Float

if TYPE_CHECKING:
    from alembic.autogenerate.api import AutogenContext


def render_item(type_: str, obj: object, autogen: AutogenContext) -> str | Literal[False]:
    """The text of ``obj`` in a migration, or False for Alembic's own rendering."""
    if type_ == "type" and isinstance(obj, JSON):
        # As 0001 writes it; Alembic would write orchestrator.store.schema.JSON(none_as_null=
        # True), which imports today's schema and which JSON's __init__ refuses.
        autogen.imports.add("from sqlalchemy.dialects import postgresql")
        return (
            "sa.JSON(none_as_null=True)"
            '.with_variant(postgresql.JSONB(none_as_null=True), "postgresql")'
        )
    # Autogenerate would write orchestrator.store.schema.Float(), tying a frozen migration
    # to today's schema module; in the database it is a plain Float.
    if type_ == "type" and isinstance(obj, Float):
        return "sa.Float()"
    return False
