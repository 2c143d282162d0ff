"""Wake-ups across workers (issue 14) on a real PostgreSQL ledger: what the reader posts reaches every
worker's listener; a listener whose connection was lost reconnects and wakes every org once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg2

from bridge.tenancy.wakeup import PAYLOAD_LIMIT, WORK_CHANNEL, Wakeups, org_ids, payloads

WAIT_SECONDS = 20.0


class Woken:
    """What one worker's fleet was told."""

    def __init__(self) -> None:
        self.work: list[str] = []
        self.orgs_changed = 0
        self.missed = 0

    def wakeups(self, dsn: str) -> Wakeups:
        return Wakeups(
            dsn,
            on_work=self.work.extend,
            on_orgs=self._changed,
            on_missed=self._missed,
            reconnect_seconds=0.1,
        )

    def _changed(self) -> None:
        self.orgs_changed += 1

    def _missed(self) -> None:
        self.missed += 1


async def _until(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _terminate_listeners(dsn: str) -> int:
    """End the sessions that LISTEN (as a ledger restart or a network cut would); how many."""
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN%%' AND pid <> pg_backend_pid()"
            )
            return len(cur.fetchall())
    finally:
        conn.close()


def test_payloads_split_within_the_notify_limit() -> None:
    """Many org ids go out in several payloads, none over the limit, every id once; None is 'default'."""
    orgs = [f"org-{n:05d}-7d0c7c1e-0000-4000-8000" for n in range(600)]
    out = payloads([*orgs, None, orgs[0]])
    assert len(out) > 1 and all(len(p.encode()) <= PAYLOAD_LIMIT for p in out)
    assert sorted(o for p in out for o in org_ids(p)) == sorted([*orgs, "default"])


async def test_posted_orgs_reach_every_listener_and_a_lost_listener_wakes_all(ledger_dsn: str) -> None:
    """The reader posts two orgs and a connection change: both workers' listeners hear them (the reader's
    own too). A listening session ended by the server: the listener reconnects, reports that it may have
    missed some (every org is woken), and hears the next post."""
    reader, other = Woken(), Woken()
    reader_wakeups, other_wakeups = reader.wakeups(ledger_dsn), other.wakeups(ledger_dsn)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in (reader_wakeups, other_wakeups)]
    await _until(lambda: reader_wakeups.listening and other_wakeups.listening, "both to listen")

    reader_wakeups.post(["org-a", None], orgs_changed=True)
    await _until(lambda: sorted(other.work) == ["default", "org-a"], "the other worker to hear the work")
    await _until(lambda: other.orgs_changed == 1 and reader.orgs_changed == 1, "the orgs change")
    assert sorted(reader.work) == ["default", "org-a"]

    assert await asyncio.to_thread(_terminate_listeners, ledger_dsn) == 2
    await _until(lambda: other.missed == 1, "the other worker to reconnect")
    await _until(lambda: other_wakeups.listening, "the other worker to listen again")
    reader_wakeups.post(["org-b"])
    await _until(lambda: "org-b" in other.work, "the next post to arrive")
    stop.set()
    await asyncio.gather(*tasks)
    assert reader_wakeups.sent >= 3


async def test_a_notify_from_sql_is_heard_too(ledger_dsn: str) -> None:
    """The channel and payload are plain PostgreSQL: a NOTIFY from any session wakes the org it names."""
    woken = Woken()
    wakeups = woken.wakeups(ledger_dsn)
    stop = asyncio.Event()
    task = asyncio.create_task(wakeups.run(stop))
    await _until(lambda: wakeups.listening, "the listener")
    conn = psycopg2.connect(ledger_dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"NOTIFY {WORK_CHANNEL}, 'org-x,org-y'")
    finally:
        conn.close()
    await _until(lambda: woken.work == ["org-x", "org-y"], "the notification")
    stop.set()
    await task
