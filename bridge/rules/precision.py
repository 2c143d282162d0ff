"""Salesforce's precision for dateTime fields, shared by the inbound policy and reconciliation's drift rules.

Salesforce keeps dateTime fields to the whole second (the API's primitive data types), so the sub-second
digits of a booking's time are dropped on the way in and must never read as a change on the way back.
"""

from __future__ import annotations

from datetime import datetime, timedelta

PRECISION = timedelta(seconds=1)


def same_instant(ours: datetime | None, theirs: datetime | None) -> bool:
    """True when two times are equal at Salesforce's precision (both missing counts as equal)."""
    if ours is None or theirs is None:
        return ours is theirs
    return abs(ours - theirs) < PRECISION
