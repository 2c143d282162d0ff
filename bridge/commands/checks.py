"""What the operator commands check before they act: ids that are ids, ids the ledger knows, a ledger that
was set up. Each failure is a UsageError (exit 2) that names the value."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING

from bridge.errors import BridgeError, LedgerUnavailable

if TYPE_CHECKING:
    from bridge.config import Settings

SETUP_HINT = "run `mogli-bridge setup` first"


class UsageError(BridgeError):
    """The operator asked for something that cannot be: an unknown id, a malformed value (exit 2)."""


class NotSetUp(UsageError):
    """The ledger has no schema (or an old one): `setup` has not run."""


def uuid_text(value: str) -> str:
    """An argparse type: a scheduler id (a UUID), kept as given; argparse names the value otherwise."""
    try:
        uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a UUID (scheduler ids are UUIDs)") from None
    return value


def require_setup(settings: Settings) -> None:
    """NotSetUp unless the ledger is at the schema this code ships."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    from bridge.ledger.engine import unavailable_reason
    from bridge.ledger.migrate import current_revision, head_revision

    try:
        revision = current_revision(settings.ledger.url)
    except (OperationalError, InterfaceError) as exc:
        raise LedgerUnavailable(f"ledger unavailable: {unavailable_reason(exc)}") from exc
    if revision is None:
        raise NotSetUp(f"the ledger has no tables yet: {SETUP_HINT}")
    if revision != head_revision():
        raise NotSetUp(f"the ledger is at an older schema ({revision}): {SETUP_HINT}")


def require_known(settings: Settings, *, links: Iterable[str] = (), bookings: Iterable[str] = ()) -> None:
    """UsageError naming every link or booking id the ledger has never seen.

    A link is known when the ledger holds its row or a booking of it (a booking may arrive before its link);
    a booking is known when the ledger holds its row.
    """
    from bridge.ledger import queries
    from bridge.ledger.repository import Ledger

    link_ids, booking_ids = sorted(set(links)), sorted(set(bookings))
    if not link_ids and not booking_ids:
        return
    ledger = Ledger.from_url(settings.ledger.url)
    try:
        found = ledger.call_read(queries.activities_by_id, booking_ids) if booking_ids else {}
        unknown_links = [
            link
            for link in link_ids
            if ledger.call_read(queries.get_link, link) is None
            and not ledger.call_read(queries.list_activities, link_id=link, limit=1)
        ]
    finally:
        ledger.dispose()
    unknown = [f"booking {b}" for b in booking_ids if b not in found] + [f"link {x}" for x in unknown_links]
    if unknown:
        raise UsageError(f"the ledger knows no {', '.join(unknown)}")
