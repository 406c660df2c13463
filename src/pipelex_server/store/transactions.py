"""Hot-path transactions written as one synchronous body, so that a transaction costs one hand-off, not one per call.

Through aiosqlite every driver call (cursor, execute, fetch, close, commit, the pool's reset) is a round trip from
the event loop to aiosqlite's thread and back, about 30 µs of CPU each: a run's insertion took 12 of them, each of
its state changes 8. ``transact`` runs a whole transaction body at once instead:

- on a SQLite file, in one hop to a thread of its own that holds a synchronous (pysqlite) connection to the same
  database. SQLite's locking orders that connection and the async engine's as it orders processes sharing the file;
  the body's first statement being a write, it takes the write lock before it reads anything (as before).
- on PostgreSQL (and an in-memory SQLite, which a second connection would not see), in the async connection's
  greenlet (``run_sync``): one greenlet switch for the body instead of one per statement.

A caller cancelled while its body runs in the thread gets its ``CancelledError`` at once; the body's transaction is
then rolled back unless it already reached its commit (as a cancellation during aiosqlite's commit hop would be).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")


class _Abandoned(Exception):
    """Its caller was cancelled before the body's commit: the transaction rolls back."""


class SqliteThread:
    """A synchronous engine on the same SQLite file as an async engine, used from one thread of its own."""

    def __init__(self, url: URL, connect_args: dict[str, Any], on_connect: Callable[[Any, Any], None]) -> None:
        # one connection: the thread runs one body at a time (SQLite has one writer at a time anyway)
        self.engine = sa.create_engine(url.set(drivername="sqlite"), connect_args=connect_args, pool_size=1, max_overflow=0)
        event.listen(self.engine, "connect", on_connect)
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _submit(self, work: Callable[[], T]) -> asyncio.Future[T]:
        # under the lock: a body is submitted either before ``close`` (which then waits for it) or to a new thread
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
            return asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def run(self, body: Callable[[Connection], T]) -> T:
        # a plain flag, not a threading.Event (a Condition and a lock built per transaction): only one thread writes it
        abandoned = [False]

        def whole() -> T:
            with self.engine.begin() as connection:
                result = body(connection)
                if abandoned[0]:
                    raise _Abandoned
            return result

        try:
            return await self._submit(whole)
        except asyncio.CancelledError:
            # a body not started yet never runs; one running rolls back, unless it already reached its commit
            abandoned[0] = True
            raise

    def close(self) -> None:
        """Close the connection (from the thread that uses it) and stop the thread; a later body starts them again."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is None:
            self.engine.dispose()
            return
        executor.submit(self.engine.dispose)
        executor.shutdown(wait=True)


_threads: weakref.WeakKeyDictionary[Engine, SqliteThread] = weakref.WeakKeyDictionary()


def attach_sqlite_thread(engine: AsyncEngine, connect_args: dict[str, Any], on_connect: Callable[[Any, Any], None]) -> None:
    """Give an async engine on a SQLite file its synchronous twin for ``transact`` (make_engine does, with the same
    connection arguments and pragmas). Disposing the async engine closes the twin."""
    thread = SqliteThread(engine.url, connect_args, on_connect)
    _threads[engine.sync_engine] = thread
    event.listen(engine.sync_engine, "engine_disposed", lambda _engine: thread.close())


async def transact(engine: AsyncEngine, body: Callable[[Connection], T]) -> T:
    """Run ``body`` in one transaction, committed when it returns, rolled back when it raises."""
    thread = _threads.get(engine.sync_engine)
    if thread is not None:
        return await thread.run(body)
    async with engine.begin() as connection:
        return await connection.run_sync(body)


def is_file_database(url: URL) -> bool:
    database = url.database or ""
    return bool(database) and ":memory:" not in database and url.query.get("mode") != "memory"
