"""A second org in a ledger, inserted by SQL: its `orgs` row, a link, pending and failed bookings and a
change-event position, so org-scoped commands and routes have something to tell apart from the default
org's rows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa

from bridge.ledger.tables import ACTIVITIES, CHECKPOINTS, LINKS, ORGS
from bridge.records.ledger import DEFAULT_ORG

AT = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
ORG_CODE = "INVALID_CROSS_REFERENCE_KEY"
CHANNEL = "/data/EventChangeEvent"


@dataclass(frozen=True)
class OtherOrg:
    """The ids of one org's rows."""

    org_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    link: str = field(default_factory=lambda: str(uuid.uuid4()))
    pending: tuple[str, ...] = field(default_factory=lambda: (str(uuid.uuid4()), str(uuid.uuid4())))
    failed: str = field(default_factory=lambda: str(uuid.uuid4()))
    position: str = "4711"


def add_org(
    url: str,
    *,
    name: str = "Acme Clinics",
    state: str = "active",
    reason: str | None = None,
    api: tuple[int, int] | None = (120, 15000),
    org: OtherOrg | None = None,
) -> OtherOrg:
    """Insert an org with one link, two pending bookings, one failed booking and a position."""
    org = org or OtherOrg()
    engine = sa.create_engine(url)
    try:
        with engine.begin() as c:
            c.execute(
                sa.insert(ORGS).values(
                    org_id=org.org_id,
                    name=name,
                    login_url="http://127.0.0.1:1",
                    username="integration@acme.example",
                    connection="connected",
                    state=state,
                    reason=reason,
                    api_used=api[0] if api else None,
                    api_limit=api[1] if api else None,
                    state_since=AT,
                    updated_at=AT,
                )
            )
            _add_rows(c, org, org.org_id)
    finally:
        engine.dispose()
    return org


def add_default_rows(url: str) -> OtherOrg:
    """The same rows for the default org (org_id NULL, its channel's position under the bare name)."""
    org = OtherOrg(org_id=DEFAULT_ORG, position="815")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as c:
            _add_rows(c, org, None)
    finally:
        engine.dispose()
    return org


def _add_rows(c: sa.Connection, org: OtherOrg, org_id: str | None) -> None:
    """A pending link, two pending and one failed booking of it, and a channel position."""
    c.execute(
        sa.insert(LINKS).values(
            link_id=org.link, org_id=org_id, title="Intake", problems=[], state="pending", updated_at=AT
        )
    )
    rows = [
        {"booking_id": b, "state": "pending", "error_code": None, "last_error": None} for b in org.pending
    ]
    rows.append({"booking_id": org.failed, "state": "failed", "error_code": ORG_CODE, "last_error": ORG_CODE})
    c.execute(
        sa.insert(ACTIVITIES),
        [{**r, "link_id": org.link, "org_id": org_id, "problems": [], "updated_at": AT} for r in rows],
    )
    stream = CHANNEL if org_id is None else f"org/{org_id}/{CHANNEL}"
    c.execute(sa.insert(CHECKPOINTS).values(stream=stream, position=org.position, updated_at=AT))
