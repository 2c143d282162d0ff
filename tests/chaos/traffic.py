"""Mixed scheduler traffic for chaos runs: creates, reschedules, cancellations, reassignments, link edits."""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import psycopg2

from bridge.devtools.stack import Scheduler


class Traffic(threading.Thread):
    """Commits `operations` scheduler changes on its own connection, reconnecting when the server goes;
    `pace` seconds apart, and on past `operations` until `until` is set, so that a scenario keeps rows flowing
    for as long as it breaks things."""

    def __init__(
        self,
        dsn: str,
        links: list[tuple[str, str]],
        members: list[str],
        contacts: list[str],
        operations: int,
        seed: int,
        pace: float = 0.002,
        until: threading.Event | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.dsn, self.links, self.members, self.contacts = dsn, links, members, contacts
        self.operations, self.pace, self.until = operations, pace, until
        self.rng = random.Random(seed)
        self.bookings: list[str] = []
        self.done: Counter[str] = Counter()
        self.reconnects = 0  # how often the server went away under the writer
        self.error: BaseException | None = None

    def run(self) -> None:
        """Perform the operations (and more, until `until` is set), each in its own transaction, retrying
        through server restarts."""
        try:
            conn = self._connect()
            for i in itertools.count():
                if i >= self.operations and (self.until is None or self.until.is_set()):
                    break
                while True:
                    try:
                        with conn, conn.cursor() as cur:
                            self.done[self._one(cur, i)] += 1
                        break
                    except (psycopg2.OperationalError, psycopg2.InterfaceError):
                        self.reconnects += 1
                        time.sleep(0.2)
                        conn = self._connect()
                time.sleep(self.pace)
            conn.close()
        except BaseException as exc:  # reported to the test thread
            self.error = exc

    def _connect(self) -> psycopg2.extensions.connection:
        for _ in range(150):
            try:
                return psycopg2.connect(self.dsn)
            except psycopg2.OperationalError:
                time.sleep(0.2)
        raise RuntimeError("the scheduling database did not come back")

    def _one(self, cur: psycopg2.extensions.cursor, i: int) -> str:
        roll = self.rng.random()
        if roll < 0.70 or len(self.bookings) < 20:
            link, kind = self.links[i % len(self.links)]
            bid = str(uuid.uuid4())
            start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1 + i % 20, minutes=i)
            assignee = self.rng.choice(self.members) if kind == "round_robin" else None
            cur.execute(
                "INSERT INTO scheduler.bookings (id, link_id, assigned_user_id, start_at, end_at, status, "
                "invitee_name, related_record_id) VALUES (%s,%s,%s,%s,%s,'scheduled','Guest',%s)",
                (bid, link, assignee, start, start + timedelta(minutes=30), self.rng.choice(self.contacts)),
            )
            self.bookings.append(bid)
            return "create"
        target = self.rng.choice(self.bookings)
        if roll < 0.82:
            cur.execute(
                "UPDATE scheduler.bookings SET start_at = start_at + interval '1 hour', "
                "end_at = end_at + interval '1 hour' WHERE id = %s",
                (target,),
            )
            return "reschedule"
        if roll < 0.89:
            cur.execute("UPDATE scheduler.bookings SET status = 'cancelled' WHERE id = %s", (target,))
            return "cancel"
        if roll < 0.96:
            cur.execute(
                "UPDATE scheduler.bookings SET assigned_user_id = %s WHERE id = %s "
                "AND assigned_user_id IS NOT NULL",
                (self.rng.choice(self.members), target),
            )
            return "reassign"
        link, _ = self.rng.choice(self.links)
        cur.execute("UPDATE scheduler.scheduling_links SET title = %s WHERE id = %s", (f"Edited {i}", link))
        return "link_edit"


def make_links(s: Scheduler, owner: str, count: int) -> list[tuple[str, str]]:
    """`count` links cycling through the three link types."""
    kinds = ("one_on_one", "round_robin", "rsvp")
    return [(s.add_link(kinds[i % 3], owner, title=f"Link {i}"), kinds[i % 3]) for i in range(count)]
