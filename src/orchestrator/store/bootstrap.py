"""Open the configured database: an engine with the settings' pool, upgraded to the newest
schema. What every command, the server and the demo start with."""

from __future__ import annotations

import sqlalchemy as sa

from orchestrator.config import Settings
from orchestrator.private_files import private_dir
from orchestrator.store.db import PoolSizes, make_engine
from orchestrator.store.migrate import ensure_current

__all__ = ["open_engine", "pool_sizes"]


def pool_sizes(settings: Settings) -> PoolSizes:
    """The connection pool the settings ask for."""
    return PoolSizes(settings.db_pool_size, settings.db_max_overflow, settings.db_pool_timeout_s)


def open_engine(settings: Settings, *, migrate: bool = True) -> sa.Engine:
    """An engine on the configured database, upgraded to the newest schema (a plain read of
    its revision when it is there already: see ``migrate.ensure_current``)."""
    private_dir(settings.home)
    engine = make_engine(settings.effective_database_url, pool=pool_sizes(settings))
    if migrate:
        ensure_current(engine)
    return engine
