"""What the operator commands check before they act: ids that are ids, ids the ledger knows, a ledger that
was set up. Each failure is a UsageError (exit 2) that names the value."""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from bridge.errors import BridgeError, LedgerUnavailable
from bridge.records.ledger import DEFAULT_ORG

if TYPE_CHECKING:
    from bridge.config import Settings
    from bridge.ledger.repository import Ledger

_T = TypeVar("_T")

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


def require_known(
    settings: Settings, *, links: Iterable[str] = (), bookings: Iterable[str] = (), org: str | None = None
) -> None:
    """UsageError naming every link or booking id the ledger has never seen (in `org`, when given).

    A link is known when the ledger holds its row or a booking of it (a booking may arrive before its link);
    a booking is known when the ledger holds its row.
    """
    from bridge.ledger import queries
    from bridge.ledger.repository import Ledger

    link_ids, booking_ids = sorted(set(links)), sorted(set(bookings))
    if not link_ids and not booking_ids:
        return
    base = Ledger.from_url(settings.ledger.url)
    ledger = in_org(base, org)
    try:
        found = ledger.call_read(queries.activities_by_id, booking_ids) if booking_ids else {}
        unknown_links = [
            link
            for link in link_ids
            if ledger.call_read(queries.get_link, link) is None
            and not ledger.call_read(queries.list_activities, link_id=link, limit=1)
        ]
    finally:
        base.dispose()
    unknown = [f"booking {b}" for b in booking_ids if b not in found] + [f"link {x}" for x in unknown_links]
    if unknown:
        where = f" in org {org}" if org is not None else ""
        raise UsageError(f"the ledger knows no {', '.join(unknown)}{where}")


def in_org(ledger: Ledger, org: str | None) -> Ledger:
    """The ledger as `--org` restricts it: every org without it, else that org's view ('default' names the
    default org, which the ledger's other tables hold as NULL)."""
    if org is None:
        return ledger
    return ledger.scoped(None if org == DEFAULT_ORG else org)


def with_ledger(settings: Settings, use: Callable[[Ledger], Awaitable[_T]]) -> _T:
    """Run `use` on a fresh Ledger from synchronous command code, in its own thread and event loop (so it
    works also where the caller already runs a loop), then close the ledger."""
    from bridge.ledger.repository import Ledger

    async def session() -> _T:
        ledger = Ledger.from_url(settings.ledger.url)
        try:
            return await use(ledger)
        finally:
            await ledger.close()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="command") as pool:
        return pool.submit(asyncio.run, session()).result()


def require_org(settings: Settings, org_id: str | None) -> None:
    """UsageError naming `--org` when the ledger has no such org ('default' names the default org)."""
    if org_id is None:
        return
    if with_ledger(settings, lambda ledger: ledger.get_org(org_id)) is None:
        raise UsageError(f"the ledger knows no org {org_id!r} (`mogli-bridge orgs` lists every org)")
