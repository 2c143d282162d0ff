"""Group commit: writes queued together share one transaction and one commit, and fail alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, event, text

from bridge.ledger import upgrade_to_head
from bridge.ledger.checkpoints import read_position, write_position
from bridge.ledger.repository import Ledger
from tests.adapters.ledger.factory import NOW


def _commits(repo: Ledger) -> list[int]:
    """A list that grows by one at each commit of the ledger's engine."""
    seen: list[int] = []
    event.listen(repo.engine, "commit", lambda _connection: seen.append(1))
    return seen


async def _behind_a_held_thread(repo: Ledger, writes: list[asyncio.Future[object]]) -> list[object]:
    """Hold the worker thread while `writes` are queued, then let them run; their results (or errors)."""
    release, running = threading.Event(), threading.Event()

    def hold() -> None:
        running.set()
        release.wait(10)

    loop = asyncio.get_running_loop()
    held = loop.run_in_executor(repo.scoped("hold")._executor, hold)
    await asyncio.to_thread(running.wait, 10)
    tasks = [asyncio.ensure_future(w) for w in writes]
    await asyncio.sleep(0.05)  # every write is queued behind the held thread
    release.set()
    await held
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_writes_of_several_orgs_queued_together_are_one_commit(repo: Ledger) -> None:
    commits = _commits(repo)
    orgs = [repo.scoped(f"org-{k}") for k in range(5)]
    results = await _behind_a_held_thread(
        repo, [o.write_checkpoint("channel", str(k)) for k, o in enumerate(orgs)]
    )

    assert results == [None] * 5
    assert len(commits) == 1
    positions = await repo.list_checkpoints()
    assert {positions[f"org/org-{k}/channel"] for k in range(5)} == {str(k) for k in range(5)}


def _write_then_fail(connection: Connection) -> None:
    write_position(connection, "doomed", "1", NOW)
    raise ValueError("this write refuses")


async def test_a_failing_write_rolls_back_alone_and_its_caller_gets_the_error(repo: Ledger) -> None:
    commits = _commits(repo)
    writes = [
        repo.scoped("a").write_checkpoint("channel", "7"),
        repo.scoped("b")._write(_write_then_fail),
        repo.scoped("c").write_checkpoint("channel", "9"),
    ]
    results = await _behind_a_held_thread(repo, writes)

    assert results[0] is None and results[2] is None
    assert isinstance(results[1], ValueError)
    assert len(commits) == 1
    assert repo.call_read(read_position, "doomed") is None
    positions = await repo.list_checkpoints()
    assert positions["org/a/channel"] == "7" and positions["org/c/channel"] == "9"


@pytest.fixture
def pg_repo(ledger_dsn: str) -> Iterator[Ledger]:
    """A repository on a migrated PostgreSQL ledger (a deferred constraint refused at COMMIT needs it)."""
    upgrade_to_head(ledger_dsn)
    repository = Ledger.from_url(ledger_dsn, clock=lambda: NOW)
    try:
        yield repository
    finally:
        repository.dispose()


async def test_a_transaction_that_cannot_commit_fails_every_write_in_it(pg_repo: Ledger) -> None:
    repo = pg_repo
    repo.call(
        lambda c: c.execute(
            text("CREATE TABLE doom (id int, CONSTRAINT once UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)")
        )
    )

    def twice(connection: Connection) -> None:
        connection.execute(text("INSERT INTO doom VALUES (1), (1)"))  # refused only at COMMIT

    writes = [repo.scoped("a").write_checkpoint("channel", "1"), repo.scoped("b")._write(twice)]
    results = await _behind_a_held_thread(repo, writes)

    assert all(isinstance(r, Exception) for r in results)
    assert "org/a/channel" not in await repo.list_checkpoints()
