"""Backfill admission: which bookings that exist at first start become Salesforce work."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from bridge.records.source import BackfillMode, BackfillPolicy, BookingRow, BookingState
from bridge.rules.backfill import backfill_admits

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SINCE = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)

NONE = BackfillPolicy(BackfillMode.NONE)
UPCOMING = BackfillPolicy(BackfillMode.UPCOMING)
SINCE_JAN = BackfillPolicy(BackfillMode.SINCE, since=SINCE)

BASE_ROW = BookingRow(
    id="b1",
    link_id="l1",
    start_at=NOW + HOUR,
    end_at=NOW + 2 * HOUR,
    status="scheduled",
    related_record_id=None,
)
BASE_STATE = BookingState(
    booking_id="b1",
    link_id="l1",
    assigned_user_id=None,
    start_at=NOW + HOUR,
    end_at=NOW + 2 * HOUR,
    status="scheduled",
    related_record_id=None,
    source_deleted=False,
)


def row(**changes: Any) -> BookingRow:
    """A snapshot row with the given changes."""
    return dataclasses.replace(BASE_ROW, **changes)


def state(**changes: Any) -> BookingState:
    """A ledger booking with the given changes."""
    return dataclasses.replace(BASE_STATE, **changes)


CASES = [
    # NONE admits nothing
    pytest.param(NONE, row(), False, id="none-upcoming"),
    pytest.param(NONE, row(start_at=NOW - HOUR), False, id="none-past"),
    pytest.param(NONE, row(start_at=None, problems=("start_at: bad",)), False, id="none-broken"),
    # UPCOMING: starts at or after now
    pytest.param(UPCOMING, row(), True, id="upcoming-future"),
    pytest.param(UPCOMING, row(start_at=NOW), True, id="upcoming-starts-now"),
    pytest.param(
        UPCOMING, row(start_at=NOW - timedelta(seconds=1)), False, id="upcoming-started-a-second-ago"
    ),
    pytest.param(UPCOMING, row(start_at=NOW - HOUR, end_at=NOW + HOUR), False, id="upcoming-under-way"),
    pytest.param(UPCOMING, row(start_at=NOW - 48 * HOUR), False, id="upcoming-past"),
    pytest.param(UPCOMING, row(status="cancelled"), False, id="upcoming-cancelled"),
    pytest.param(UPCOMING, row(status=None), True, id="upcoming-no-status-fails-visibly"),
    pytest.param(UPCOMING, row(status="weird"), True, id="upcoming-unknown-status-fails-visibly"),
    pytest.param(UPCOMING, row(start_at=None), True, id="upcoming-unknown-start-fails-visibly"),
    pytest.param(UPCOMING, row(problems=("end_at: bad",), end_at=None), True, id="upcoming-bad-end"),
    pytest.param(
        UPCOMING,
        row(start_at=(NOW + HOUR).astimezone(timezone(timedelta(hours=-8)))),
        True,
        id="upcoming-other-offset",
    ),
    pytest.param(UPCOMING, row(start_at=(NOW - HOUR).replace(tzinfo=None)), False, id="upcoming-naive-past"),
    pytest.param(UPCOMING, row(start_at=(NOW + HOUR).replace(tzinfo=None)), True, id="upcoming-naive-future"),
    pytest.param(UPCOMING, state(), True, id="upcoming-ledger-state"),
    pytest.param(UPCOMING, state(source_deleted=True), False, id="upcoming-deleted"),
    pytest.param(UPCOMING, state(status="cancelled"), False, id="upcoming-state-cancelled"),
    # SINCE: starts at or after the date, past or future
    pytest.param(SINCE_JAN, row(), True, id="since-future"),
    pytest.param(SINCE_JAN, row(start_at=NOW - 48 * HOUR), True, id="since-past-after-date"),
    pytest.param(SINCE_JAN, row(start_at=SINCE), True, id="since-exactly-the-date"),
    pytest.param(SINCE_JAN, row(start_at=SINCE - timedelta(seconds=1)), False, id="since-before-the-date"),
    pytest.param(SINCE_JAN, row(start_at=SINCE - 400 * 24 * HOUR), False, id="since-long-before"),
    pytest.param(SINCE_JAN, row(status="cancelled", start_at=NOW - HOUR), False, id="since-cancelled"),
    pytest.param(SINCE_JAN, row(start_at=None), True, id="since-unknown-start-fails-visibly"),
    pytest.param(SINCE_JAN, state(source_deleted=True, start_at=NOW - HOUR), False, id="since-deleted"),
    pytest.param(
        BackfillPolicy(BackfillMode.SINCE, since=SINCE.replace(tzinfo=None)),
        row(start_at=SINCE),
        True,
        id="since-naive-date-read-as-utc",
    ),
]


@pytest.mark.parametrize(("policy", "booking", "expected"), CASES)
def test_backfill_admits(policy: BackfillPolicy, booking: BookingRow | BookingState, expected: bool) -> None:
    """Each policy admits exactly the existing bookings it promises, and never a cancelled or deleted one."""
    assert backfill_admits(policy, booking, NOW) is expected


def test_since_without_a_date_is_refused() -> None:
    """A SINCE policy without its date is a settings bug and raises instead of guessing."""
    with pytest.raises(ValueError, match="since"):
        backfill_admits(BackfillPolicy(BackfillMode.SINCE), row(), NOW)


def test_none_never_consults_the_booking() -> None:
    """NONE is decided before anything about the booking, even for a SINCE-less or broken row."""
    assert backfill_admits(NONE, row(start_at=None, status=None), NOW) is False
