"""Alembic environment: always driven programmatically with a live connection (see store/db.py)."""

from alembic import context

from pipelex_server.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
