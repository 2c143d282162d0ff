"""End to end: kill -9 at random moments, and Salesforce faults, lose nothing and double nothing."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from bridge.devtools.invariants import Tally
from bridge.devtools.stack import check_invariants, count_damage, ledger_activities, wait_until

from .conftest import Stack

BOOKINGS = 2000
KILLS = 5


def _stream_bookings(
    dsn: str,
    links: list[tuple[str, str | None]],
    contacts: list[str],
    n: int,
    done: threading.Event,
    rng: random.Random,
) -> None:
    """Commit n bookings in small transactions, with some reschedules and cancellations mixed in."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = False
    ids: list[str] = []
    try:
        with conn.cursor() as cur:
            for i in range(n):
                link, assignee = links[i % len(links)]
                bid = str(uuid.uuid4())
                start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1 + i % 30, minutes=i)
                cur.execute(
                    "INSERT INTO scheduler.bookings (id, link_id, assigned_user_id, start_at, end_at, "
                    "status, "
                    "invitee_name, related_record_id) VALUES (%s,%s,%s,%s,%s,'scheduled','Guest',%s)",
                    (bid, link, assignee, start, start + timedelta(minutes=30), contacts[i % len(contacts)]),
                )
                ids.append(bid)
                if i % 97 == 0 and ids:
                    cur.execute(
                        "UPDATE scheduler.bookings SET start_at = start_at + interval '1 hour', "
                        "end_at = end_at + interval '1 hour' WHERE id = %s",
                        (rng.choice(ids),),
                    )
                if i % 131 == 0 and ids:
                    cur.execute(
                        "UPDATE scheduler.bookings SET status='cancelled' WHERE id = %s", (rng.choice(ids),)
                    )
                if i % 5 == 4:
                    conn.commit()
                    time.sleep(0.002)
            conn.commit()
    finally:
        conn.close()
        done.set()


def _scenario(stack: Stack, seed_value: int, faults: bool) -> None:
    rng = random.Random(seed_value)
    s, seed = stack.scheduler, stack.seed
    owner, member = s.add_user(seed.users[0]), s.add_user(seed.users[1])
    links: list[tuple[str, str | None]] = []
    for i in range(10):
        kind = ("one_on_one", "round_robin", "rsvp")[i % 3]
        links.append((s.add_link(kind, owner, title=f"Link {i}"), member if kind == "round_robin" else None))
    daemon = stack.daemon(extra="")
    if faults:
        stack.emulator.add_fault(
            path="/composite/sobjects", status=503, error_code="SERVER_UNAVAILABLE", probability=0.1
        )
        stack.emulator.add_fault(
            path="/composite/sobjects", status=400, error_code="UNABLE_TO_LOCK_ROW", probability=0.05
        )
        stack.emulator.add_fault(
            path="/composite/sobjects", status=403, error_code="REQUEST_LIMIT_EXCEEDED", times=2
        )
    done = threading.Event()
    writer = threading.Thread(
        target=_stream_bookings, args=(stack.dsn, links, seed.contacts + seed.leads[:1], BOOKINGS, done, rng)
    )
    daemon.start()
    writer.start()
    for _ in range(KILLS):
        pause = rng.uniform(0.5, 3.0)
        time.sleep(pause / 2)
        if faults:
            # The running daemon's session dies under it: it must log in again once, not lose the batch.
            stack.emulator.control("sessions/expire")
        time.sleep(pause / 2)
        daemon.kill9()
        daemon.start()
    writer.join()
    assert done.is_set()
    if faults:
        stack.emulator.clear_faults()

    def settled() -> bool:
        acts = ledger_activities(stack.ledger_url)
        # A booking cancelled before the first snapshot never needs an Event: the backfill skips it.
        return len(acts) == BOOKINGS and all(
            a["state"] in ("synced", "cancelled", "skipped") for a in acts.values()
        )

    try:
        wait_until(settled, timeout=240, interval=1.0, what="every booking to reach Salesforce")
    except AssertionError:
        states = Counter(a["state"] for a in ledger_activities(stack.ledger_url).values())
        raise AssertionError(
            f"not settled: ledger states {dict(states)}; daemon log {daemon.log_path}"
        ) from None
    # The verdict before any repair: the oracle, a dry-run reconciliation through the daemon, the counts.
    assert check_invariants(stack.emulator, s, stack.ledger_url) == []
    dry = daemon.reconcile(dry_run=True)
    assert dry["dry_run"] is True and dry["total"] == 0, dry["items"][:5]
    assert count_damage(stack.emulator, s) == Tally(lost=0, doubled=0)
    daemon.wait_started()
    assert daemon.terminate() == 0
    moglis = stack.emulator.records("Mogli_Event__c")
    assert len(moglis) == len(links)


@pytest.mark.timeout(420)
def test_kill_minus_nine_five_times_during_two_thousand_bookings(stack: Stack) -> None:
    """Five SIGKILLs while 2,000 bookings stream in: each booking has exactly one Event; the ledger agrees."""
    _scenario(stack, seed_value=7, faults=False)


@pytest.mark.timeout(420)
def test_kill_minus_nine_under_salesforce_faults(stack: Stack) -> None:
    """Same, while the org answers 503s, UNABLE_TO_LOCK_ROW, REQUEST_LIMIT_EXCEEDED and expires sessions."""
    _scenario(stack, seed_value=11, faults=True)
