"""Alembic environment for the hub database (online mode only: we always have the URL)."""

from __future__ import annotations

from alembic import context

from fieldkit.hub.db import Base, make_engine
from fieldkit.hub.web import models  # noqa: F401  (its tables join Base.metadata: one schema)

url = context.config.get_main_option("sqlalchemy.url")
if url is None:
    raise RuntimeError("no database url given to the migrations")
engine = make_engine(url)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
