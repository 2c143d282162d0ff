"""One active daemon per ledger: the others wait as standbys.

SQLite ledgers use an exclusive `flock` on a file next to the database; PostgreSQL ledgers use a session
advisory lock. Both are released by the operating system or the server when the holder dies, even by kill -9,
so a standby takes over without any home-made consensus.
"""

from __future__ import annotations

import enum
import fcntl
import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

ADVISORY_KEY = 0x6D6F676C  # "mogl"


class LockHealth(enum.StrEnum):
    """What a check of a held lock found."""

    HELD = "held"
    UNREACHABLE = "unreachable"  # the ledger database cannot be reached: nobody can take the lock either
    LOST = "lost"  # the database came back and another process holds the lock now


class InstanceLock:
    """Exclusive ownership of a ledger by one daemon process."""

    def __init__(self, url: str) -> None:
        self._url = make_url(url)
        self._fd: int | None = None
        self._engine: Engine | None = None
        self._conn: Connection | None = None

    @property
    def held(self) -> bool:
        """True while this process owns the ledger."""
        return self._fd is not None or self._conn is not None

    def try_acquire(self) -> bool:
        """Take the lock if free; never blocks."""
        if self.held:
            return True
        if self._url.get_backend_name() == "sqlite":
            return self._try_flock()
        return self._try_advisory()

    def _try_flock(self) -> bool:
        database = self._url.database or ""
        path = (
            Path(database + ".lock")
            if database and database != ":memory:"
            else Path("var/ledger-memory.lock")
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def _try_advisory(self) -> bool:
        if self._engine is None:
            self._engine = sa.create_engine(self._url, poolclass=sa.pool.NullPool)
        conn = self._engine.connect()
        got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}).scalar()
        conn.commit()
        if got:
            self._conn = conn
            return True
        conn.close()
        return False

    def verify(self) -> LockHealth:
        """Check that the lock is still ours; re-take it after the ledger database came back.

        A PostgreSQL advisory lock dies with its session: when the ledger server restarts, a standby may take
        it. An flock cannot be lost while the process lives.
        """
        if self._fd is not None:
            return LockHealth.HELD
        if self._conn is not None:
            try:
                self._conn.execute(sa.text("SELECT 1"))
                self._conn.commit()
                return LockHealth.HELD
            except sa.exc.DBAPIError:
                self._conn.close()
                self._conn = None
        try:
            return LockHealth.HELD if self._try_advisory() else LockHealth.LOST
        except sa.exc.DBAPIError:
            return LockHealth.UNREACHABLE

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
