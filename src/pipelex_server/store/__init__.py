"""The run store: the only package that contains SQL."""

from pipelex_server.store.async_engine import install_engine_only

install_engine_only()  # before any module of the store imports sqlalchemy.ext.asyncio (the ORM stays out)
