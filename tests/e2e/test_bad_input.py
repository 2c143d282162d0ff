"""Bad input, thirty kinds: each bad row fails alone with its reason (or is written in its documented,
corrected form); the good rows around them sync, and the daemon keeps going.

The scheduler's columns are loosened first (ids as text, NOT NULL dropped, foreign keys bypassed), as a broken
import or a schema drift would leave them: the bridge must meet every such row with a clear, recorded outcome.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge import sfid
from bridge.devtools.stack import Scheduler, check_invariants, ledger_activities, wait_until

from .conftest import Stack, assert_logs_clean

LOOSEN = """
ALTER TABLE scheduler.bookings DROP CONSTRAINT bookings_link_id_fkey;
ALTER TABLE scheduler.bookings DROP CONSTRAINT bookings_assigned_user_id_fkey;
ALTER TABLE scheduler.bookings ALTER COLUMN id TYPE text;
ALTER TABLE scheduler.bookings ALTER COLUMN link_id TYPE text;
ALTER TABLE scheduler.bookings ALTER COLUMN start_at DROP NOT NULL;
ALTER TABLE scheduler.bookings ALTER COLUMN end_at DROP NOT NULL;
ALTER TABLE scheduler.bookings ALTER COLUMN status DROP NOT NULL;
"""


@dataclass
class World:
    """What every case can use: a scheduler, the seeded org, a good owner and good links."""

    s: Scheduler
    contacts: list[str]
    leads: list[str]
    accounts: list[str]
    users: list[str]
    owner: str
    one: str
    rr: str
    start: datetime


def _book(w: World, link: str | None = None, **kw: Any) -> str:
    return w.s.add_booking(link or w.one, start=kw.pop("start", w.start), **kw)


def _raw(w: World, booking_id: str, link_id: str, start: Any, end: Any, status: Any) -> str:
    w.s.execute(
        "INSERT INTO scheduler.bookings (id, link_id, start_at, end_at, status, invitee_name) "
        "VALUES (%s,%s,%s,%s,%s,'Invitee Person')",
        (booking_id, link_id, start, end, status),
    )
    return booking_id


def _link_owned_by(w: World, salesforce_user_id: str | None, **kw: Any) -> str:
    return w.s.add_link("one_on_one", w.s.add_user(salesforce_user_id), **kw)


def _inserted_then_deleted(w: World) -> str:
    bid = str(uuid.uuid4())
    with w.s.conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute(
            "INSERT INTO scheduler.bookings (id, link_id, start_at, end_at, status, invitee_name) "
            "VALUES (%s,%s,%s,%s,'scheduled','Invitee Person')",
            (bid, w.one, w.start, w.start + timedelta(minutes=30)),
        )
        cur.execute("DELETE FROM scheduler.bookings WHERE id = %s", (bid,))
        cur.execute("COMMIT")
    return bid


FAILED = "failed"
SYNCED = "synced"
# name -> (make the row, expected state, accepted error codes (failed) or None)
CASES: dict[str, tuple[Callable[[World], str], str, frozenset[str] | None]] = {
    "non_uuid_booking_id": (
        lambda w: _raw(w, "booking-42", w.one, w.start, w.start + timedelta(hours=1), "scheduled"),
        FAILED,
        frozenset({"BAD_VALUE"}),
    ),
    "unknown_link_type": (
        lambda w: _book(w, w.s.add_link("carousel", w.owner)),
        FAILED,
        frozenset({"UNKNOWN_LINK_TYPE"}),
    ),
    "end_before_start": (lambda w: _book(w, minutes=-30), FAILED, frozenset({"END_BEFORE_START"})),
    "two_year_meeting": (lambda w: _book(w, minutes=2 * 365 * 24 * 60), FAILED, frozenset({"TOO_LONG"})),
    "just_over_a_day": (lambda w: _book(w, minutes=24 * 60 + 1), FAILED, frozenset({"TOO_LONG"})),
    "null_start": (
        lambda w: _raw(w, str(uuid.uuid4()), w.one, None, w.start, "scheduled"),
        FAILED,
        frozenset({"MISSING_TIMES"}),
    ),
    "null_status": (
        lambda w: _raw(w, str(uuid.uuid4()), w.one, w.start, w.start + timedelta(hours=1), None),
        FAILED,
        frozenset({"UNKNOWN_STATUS"}),
    ),
    "unknown_status": (lambda w: _book(w, status="tentative"), FAILED, frozenset({"UNKNOWN_STATUS"})),
    "malformed_related_id": (
        lambda w: _book(w, related="003-not-an-id"),
        FAILED,
        frozenset({"INVALID_RELATED_RECORD"}),
    ),
    "related_id_of_nothing": (
        lambda w: _book(w, related=sfid.to18("003Em0000099999")),
        FAILED,
        frozenset({"INVALID_CROSS_REFERENCE_KEY", "ENTITY_IS_DELETED"}),
    ),
    "unknown_assignee": (
        lambda w: _book(w, w.rr, assigned=str(uuid.uuid4())),
        FAILED,
        frozenset({"USER_NOT_CONNECTED", "NO_ASSIGNEE"}),
    ),
    "unmapped_owner": (
        lambda w: _book(w, _link_owned_by(w, None)),
        FAILED,
        frozenset({"USER_NOT_CONNECTED"}),
    ),
    "malformed_owner_id": (
        lambda w: _book(w, _link_owned_by(w, "abc")),
        FAILED,
        frozenset({"INVALID_USER_ID", "MOGLI_EVENT_FAILED"}),
    ),
    "owner_id_is_a_contact": (
        lambda w: _book(w, _link_owned_by(w, w.contacts[2])),
        FAILED,
        frozenset({"INVALID_USER_ID", "MOGLI_EVENT_FAILED"}),
    ),
    "missing_link": (lambda w: _book(w, str(uuid.uuid4())), FAILED, frozenset({"LINK_MISSING"})),
    "non_uuid_link_id": (
        lambda w: _raw(w, str(uuid.uuid4()), "link-7", w.start, w.start + timedelta(hours=1), "scheduled"),
        FAILED,
        frozenset({"LINK_MISSING", "BAD_VALUE"}),
    ),
    "round_robin_without_assignee": (lambda w: _book(w, w.rr), FAILED, frozenset({"NO_ASSIGNEE"})),
    "hundred_kb_description": (
        lambda w: _book(w, _link_owned_by(w, w.users[0], description="d" * 100_000)),
        SYNCED,
        None,
    ),
    "emoji_and_right_to_left_title": (
        lambda w: _book(w, _link_owned_by(w, w.users[0], title="Café ☕ مرحبا שלום 🎉")),
        SYNCED,
        None,
    ),
    "three_hundred_character_title": (
        lambda w: _book(w, _link_owned_by(w, w.users[0], title="T" * 300)),
        SYNCED,
        None,
    ),
    "control_characters_in_description": (
        lambda w: _book(w, _link_owned_by(w, w.users[0], description="tab\there\x07bell")),
        SYNCED,
        None,
    ),
    "whitespace_only_description": (
        lambda w: _book(w, _link_owned_by(w, w.users[0], description="   \n ")),
        SYNCED,
        None,
    ),
    "fifteen_character_contact_id": (lambda w: _book(w, related=w.contacts[0][:15]), SYNCED, None),
    "lower_case_eighteen_character_id": (lambda w: _book(w, related=w.contacts[1].lower()), SYNCED, None),
    "account_related": (lambda w: _book(w, related=w.accounts[0]), SYNCED, None),
    "lead_related": (lambda w: _book(w, related=w.leads[0]), SYNCED, None),
    "zero_minute_meeting": (lambda w: _book(w, minutes=0), SYNCED, None),
    "year_2999": (lambda w: _book(w, start=datetime(2999, 1, 1, 9, tzinfo=UTC)), SYNCED, None),
    # "skipped" when the first snapshot already saw it cancelled (the backfill never writes those).
    "cancelled_before_first_sync": (lambda w: _book(w, status="cancelled"), "cancelled|skipped", None),
    # Never existed outside its transaction: nothing to write, and the ledger needs no row for it.
    "inserted_and_deleted_in_one_transaction": (_inserted_then_deleted, "absent", None),
}


def test_thirty_kinds_of_bad_input_each_fail_alone_and_everything_else_syncs(stack: Stack) -> None:
    """Every bad row ends with its documented outcome and a readable reason; good rows sync untouched."""
    assert len(CASES) >= 25
    s, seed = stack.scheduler, stack.seed
    s.execute(LOOSEN)
    owner = s.add_user(seed.users[0])
    start = (datetime.now(UTC) + timedelta(days=5)).replace(microsecond=0)
    w = World(
        s,
        seed.contacts,
        seed.leads,
        seed.accounts,
        seed.users,
        owner,
        s.add_link("one_on_one", owner, title="Good"),
        s.add_link("round_robin", owner, title="Pool"),
        start,
    )
    daemon = stack.daemon()
    daemon.start()
    try:
        good_before = [_book(w, related=c) for c in seed.contacts]
        ids = {name: make(w) for name, (make, _, _) in CASES.items()}
        good_after = [_book(w, related=c) for c in seed.contacts]
        absent = sum(1 for _, state, _ in CASES.values() if state == "absent")
        everything = len(ids) + len(good_before) + len(good_after) - absent

        def settled() -> bool:
            acts = ledger_activities(stack.ledger_url)
            return len(acts) >= everything and all(a["state"] != "pending" for a in acts.values())

        try:
            wait_until(settled, timeout=90, what="every row to settle")
        except AssertionError:
            acts = ledger_activities(stack.ledger_url)
            stuck = {
                n: (acts.get(b) or {}).get("state")
                for n, b in ids.items()
                if (acts.get(b) or {}).get("state") in (None, "pending") and CASES[n][1] != "absent"
            }
            raise AssertionError(f"not settled: {stuck}") from None
        acts = ledger_activities(stack.ledger_url)
        outcomes = {
            name: (acts[bid]["state"], acts[bid]["error_code"]) if bid in acts else ("absent", None)
            for name, bid in ids.items()
        }
        for name, (_, state, codes) in CASES.items():
            got_state, got_code = outcomes[name]
            reason = (acts.get(ids[name]) or {}).get("last_error")
            assert got_state in state.split("|"), f"{name}: {outcomes[name]} ({reason})"
            if codes is not None:
                assert got_code in codes, f"{name}: {outcomes[name]}"
                assert len(acts[ids[name]]["last_error"] or "") > 15, f"{name}: no readable reason"
        for bid in good_before + good_after:
            assert acts[bid]["state"] == "synced"

        events = {e["Scheduling_Booking_Id__c"]: e for e in stack.emulator.records("Event")}
        assert len(events[ids["hundred_kb_description"]]["Description"]) <= 32_000
        assert "truncated" in events[ids["hundred_kb_description"]]["Description"]
        assert events[ids["emoji_and_right_to_left_title"]]["Subject"] == "Café ☕ مرحبا שלום 🎉"
        assert len(events[ids["three_hundred_character_title"]]["Subject"]) <= 255
        assert sfid.same(events[ids["fifteen_character_contact_id"]]["WhoId"], seed.contacts[0])
        assert sfid.same(events[ids["lower_case_eighteen_character_id"]]["WhoId"], seed.contacts[1])
        assert events[ids["account_related"]].get("WhoId") is None
        assert events[ids["lead_related"]].get("WhatId") is None
        assert ids["cancelled_before_first_sync"] not in events
        assert ids["inserted_and_deleted_in_one_transaction"] not in events
        failed = {bid for name, bid in ids.items() if CASES[name][1] == FAILED}
        assert not failed & set(events), "no Event for a failed row"
        # The good rows (and the corrected ones the checker can judge) agree on all three sides.
        transformed = {
            ids[n]
            for n in (
                "hundred_kb_description",
                "three_hundred_character_title",
                "whitespace_only_description",
                "non_uuid_booking_id",
                "null_start",
                "null_status",
                "non_uuid_link_id",
                "missing_link",
            )
        }
        assert check_invariants(stack.emulator, s, None, failed_ok=frozenset(failed | transformed)) == []
    finally:
        daemon.wait_started()
        assert daemon.terminate() == 0
    assert_logs_clean(daemon)


@pytest.mark.timeout(180)
def test_truncated_bookings_table_fails_each_row_and_deletes_nothing(stack: Stack) -> None:
    """TRUNCATE is not a mass cancellation: Events stay, every row fails with the reason, new rows sync."""
    s, seed = stack.scheduler, stack.seed
    owner = s.add_user(seed.users[0])
    link = s.add_link("one_on_one", owner)
    daemon = stack.daemon()
    daemon.start()
    try:
        before = [s.add_booking(link, related=c) for c in seed.contacts]
        wait_until(
            lambda: all(
                ledger_activities(stack.ledger_url).get(b, {}).get("state") == "synced" for b in before
            ),
            what="the first bookings to sync",
        )
        s.execute("TRUNCATE scheduler.bookings")
        after = s.add_booking(link, related=seed.contacts[0])
        wait_until(
            lambda: ledger_activities(stack.ledger_url).get(after, {}).get("state") == "synced",
            what="a booking after the truncate to sync",
        )
        acts = ledger_activities(stack.ledger_url)
        for bid in before:
            assert (acts[bid]["state"], acts[bid]["error_code"]) == ("failed", "SOURCE_TRUNCATED")
        assert len(stack.emulator.records("Event")) == len(before) + 1
    finally:
        daemon.wait_started()
        assert daemon.terminate() == 0
