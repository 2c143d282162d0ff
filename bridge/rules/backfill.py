"""Which bookings that already exist at first start become Salesforce work (pure; `now` is an argument).

Decisions:
- A cancelled or deleted booking is never admitted: it never reached Salesforce, so nothing needs undoing.
- A booking whose status or times are broken is admitted when the policy cannot rule it out (its start is
  unknown, or its status is neither scheduled nor cancelled): it then ends as a failed row with a readable
  reason instead of vanishing silently.
- UPCOMING admits meetings that start at or after `now`; one already under way counts as past.
- A naive datetime is read as UTC, so a stray naive value cannot make the comparison raise.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bridge.records.source import BackfillMode, BackfillPolicy, BookingRow, BookingState
from bridge.rules.mapping import CANCELLED


def backfill_admits(policy: BackfillPolicy, booking: BookingRow | BookingState, now: datetime) -> bool:
    """True when an existing booking becomes Salesforce work under `policy`.

    Raises ValueError for a SINCE policy without a date (settings validation should have refused it).
    """
    if policy.mode is BackfillMode.NONE:
        return False
    if isinstance(booking, BookingState) and booking.source_deleted:
        return False
    if booking.status == CANCELLED:
        return False
    if policy.mode is BackfillMode.UPCOMING:
        threshold = now
    elif policy.since is None:
        raise ValueError("backfill mode 'since' needs a date")
    else:
        threshold = policy.since
    if booking.start_at is None:
        return True
    return _utc(booking.start_at) >= _utc(threshold)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.utcoffset() is None else moment
