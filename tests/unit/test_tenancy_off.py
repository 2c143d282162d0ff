"""With tenancy off the scheduler's organizations change nothing: every user is the default org's."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from bridge.pipeline.ingest import without_organizations
from bridge.records.source import (
    BookingRow,
    ChangeOp,
    LinkRow,
    OrganizationRow,
    SourceChange,
    SourceTable,
    SourceTransaction,
    UserRow,
)
from bridge.tenancy.parts import WithoutOrganizations

NOW = datetime(2030, 1, 1, tzinfo=UTC)
ORG = "7d0c7c1e-0000-4000-8000-000000000001"


def _txn(*changes: SourceChange) -> SourceTransaction:
    return SourceTransaction(end_lsn=10, commit_time=NOW, changes=changes)


def test_users_lose_their_organization_and_nothing_else_changes() -> None:
    """A user's organization_id is dropped; organizations and other rows pass unchanged."""
    org = SourceChange(SourceTable.ORGANIZATIONS, ChangeOp.INSERT, OrganizationRow(ORG, "Acme"))
    user = SourceChange(SourceTable.USERS, ChangeOp.INSERT, UserRow("u1", "005A", organization_id=ORG))
    link = SourceChange(SourceTable.LINKS, ChangeOp.INSERT, LinkRow("l1", owner_id="u1"))
    out = without_organizations(_txn(org, user, link))
    assert out.changes[0] == org and out.changes[2] == link
    assert out.changes[1].row == UserRow("u1", "005A", organization_id=None)


def test_a_transaction_without_organizations_is_passed_as_it_is() -> None:
    """Nothing to drop: the very same transaction object (no copy per transaction)."""
    txn = _txn(SourceChange(SourceTable.USERS, ChangeOp.UPDATE, UserRow("u1", "005A")))
    assert without_organizations(txn) is txn


class _Reader:
    async def booking_ids(
        self, links: Sequence[str], bookings: Sequence[str], since: datetime | None, until: datetime | None
    ) -> list[tuple[str, str | None, str | None]]:
        return [("b1", "l1", None)]

    async def link_ids(self) -> list[str]:
        return ["l1"]

    async def user_ids(self) -> list[str]:
        return ["u1"]

    async def bookings(self, ids: Sequence[str]) -> dict[str, BookingRow]:
        return {"b1": BookingRow("b1", link_id="l1")}

    async def links(self, ids: Sequence[str]) -> dict[str, LinkRow]:
        return {"l1": LinkRow("l1", owner_id="u1")}

    async def users(self, ids: Sequence[str]) -> dict[str, UserRow]:
        return {"u1": UserRow("u1", "005A", organization_id=ORG)}


async def test_the_reconcilers_reader_sees_no_organizations() -> None:
    """Re-mirrored users keep no organization either; every other read is the reader's own."""
    reader = WithoutOrganizations(_Reader())
    assert await reader.users(["u1"]) == {"u1": UserRow("u1", "005A", organization_id=None)}
    assert await reader.booking_ids([], [], None, None) == [("b1", "l1", None)]
    assert (await reader.links(["l1"]))["l1"].owner_id == "u1"
    assert await reader.link_ids() == ["l1"] and await reader.user_ids() == ["u1"]
