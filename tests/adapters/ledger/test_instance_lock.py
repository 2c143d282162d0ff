"""One active daemon per ledger: the lock is exclusive, survives nothing it should not, and notices a loss."""

from __future__ import annotations

from pathlib import Path

from bridge.devtools.localpg import LocalPostgres
from bridge.ledger.lock import InstanceLock, LockHealth


def test_sqlite_ledger_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    """A second holder is refused while the first holds the file lock, and gets it once released."""
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    first, second = InstanceLock(url), InstanceLock(url)
    assert first.try_acquire()
    assert not second.try_acquire()
    assert first.verify() is LockHealth.HELD
    first.release()
    assert second.try_acquire()
    second.release()


def test_postgresql_lock_is_retaken_after_a_restart_or_reported_lost() -> None:
    """After a ledger restart the holder takes its advisory lock again, unless another was faster."""
    pg = LocalPostgres().start()
    try:
        url = pg.create_database("ledger")
        first, second = InstanceLock(url), InstanceLock(url)
        assert first.try_acquire() and not second.try_acquire()
        pg.restart(mode="fast")
        assert first.verify() is LockHealth.HELD
        assert not second.try_acquire()
        pg.restart(mode="fast")
        assert second.try_acquire(), "the lock died with the first holder's session"
        assert first.verify() is LockHealth.LOST
        pg.stop(remove=False, mode="fast")
        assert second.verify() is LockHealth.UNREACHABLE
        first.release()
        second.release()
    finally:
        pg.stop()
