"""A ledger holding three orgs: the default org (org_id NULL) and two customer orgs, one user, link and
booking each, for the org-scope tests."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, insert, update

from bridge.ledger.repository import Ledger
from bridge.ledger.tables import ACTIVITIES, JOURNAL, LINKS, ORGS, USERS
from bridge.records.ledger import OrgState
from tests.adapters.ledger.factory import NOW, batch, booking, link, txn, user

ORG_A = "0a0a0a0a-0000-4000-8000-00000000000a"
ORG_B = "0b0b0b0b-0000-4000-8000-00000000000b"
# org_id in the ledger tables -> the suffix of its user, link and booking ids ("u-a", "l-a", "b-a").
SUFFIX: dict[str | None, str] = {None: "0", ORG_A: "a", ORG_B: "b"}
# Each org's integration user in Salesforce: the same 15/18-char id shape, different orgs.
SALESFORCE_USER = {None: "005000000000000AAA", ORG_A: "00500000000000AAAA", ORG_B: "00500000000000BAAA"}
ORGS_IDS = (None, ORG_A, ORG_B)


def _assign(connection: Connection) -> None:
    """Give each org's user, link and booking (and their source journal entries) its org_id, as ingest
    decides it in life."""
    for org, s in SUFFIX.items():
        connection.execute(update(USERS).where(USERS.c.user_id == f"u-{s}").values(org_id=org))
        connection.execute(update(LINKS).where(LINKS.c.link_id == f"l-{s}").values(org_id=org))
        connection.execute(update(ACTIVITIES).where(ACTIVITIES.c.booking_id == f"b-{s}").values(org_id=org))
        keys = (f"u-{s}", f"l-{s}", f"b-{s}")
        connection.execute(update(JOURNAL).where(JOURNAL.c.entity_key.in_(keys)).values(org_id=org))


def _orgs_rows(connection: Connection, now: datetime) -> None:
    rows = [
        {"org_id": org, "name": f"Org {SUFFIX[org]}", "state": OrgState.ACTIVE.value, "updated_at": now}
        for org in (ORG_A, ORG_B)
    ]
    connection.execute(insert(ORGS), rows)


async def three_orgs(repo: Ledger) -> None:
    """Ingest a user, link and booking per org, then put them in their orgs (and the orgs in `orgs`)."""
    rows = []
    for org, s in SUFFIX.items():
        rows += [user(f"u-{s}", SALESFORCE_USER[org]), link(f"l-{s}", f"u-{s}"), booking(f"b-{s}", f"l-{s}")]
    await repo.apply_source_batch(batch(txn(*rows)))
    repo.call(_assign)
    repo.call(_orgs_rows, NOW)
