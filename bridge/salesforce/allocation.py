"""The delivered change-event allocation as Salesforce reports it: `/limits` and the CometD refusal.

Salesforce counts change events delivered to CometD, Pub/Sub and empApi subscribers in a rolling 24 hours
(after channel filters), shared by every subscriber of the org; `/limits` reports it as
`DailyDeliveredPlatformEvents: {Max, Remaining}`. Once it is used up, CometD refuses with
`403::Organization total events daily limit exceeded`.
"""

from __future__ import annotations

from typing import Any

from bridge.errors import SalesforceUnavailable
from bridge.records.inbound import EventAllocation

LIMIT_NAME = "DailyDeliveredPlatformEvents"
DAILY_LIMIT_ERROR = "events daily limit exceeded"


def decode_event_allocation(body: Any) -> EventAllocation:
    """`DailyDeliveredPlatformEvents` of a `/limits` answer; SalesforceUnavailable when it is missing."""
    entry = body.get(LIMIT_NAME) if isinstance(body, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("Max"), int):
        raise SalesforceUnavailable(f"limits response lacks {LIMIT_NAME}")
    remaining = entry.get("Remaining")
    return EventAllocation(
        limit=int(entry["Max"]), remaining=int(remaining) if isinstance(remaining, int) else 0
    )


def is_daily_limit_error(text: str) -> bool:
    """True for CometD's refusal once the delivered-event allocation is used up."""
    return DAILY_LIMIT_ERROR in text.lower()
