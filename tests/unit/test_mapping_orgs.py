"""The cross-org rule (CONTRACT §9): a user of another org than the record is refused with CROSS_ORG_USER."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from bridge.ledger import ingest
from bridge.records.outbound import ActivityWork, LinkWork
from bridge.records.source import BookingState, LinkState, UserState
from bridge.rules.mapping import (
    USER_WAITING_CODES,
    WAITING_CODES,
    FailureCode,
    MappingOptions,
    RuleFailure,
    UpsertEvent,
    event_action,
    mogli_event_for,
)

ORG_A = "0a000000-0000-4000-8000-00000000000a"
ORG_B = "0b000000-0000-4000-8000-00000000000b"
OWNER_ID = "7f1e0c1a-0000-4000-8000-000000000001"
ASSIGNEE_ID = "7f1e0c1a-0000-4000-8000-000000000002"
LINK_ID = "9a1b2c3d-0000-4000-8000-00000000000a"
BOOKING_ID = "b0000000-0000-4000-8000-000000000001"
OWNER_SF, ASSIGNEE_SF = "005Dn000001OwNrIAK", "005Dn000002AsSgIAK"
MOGLI, CONTACT = "a01Dn00000MoGlIIAV", "003Dn00000CoNtAIAV"
T0 = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
OPTIONS = MappingOptions()

LINK = LinkState(
    link_id=LINK_ID,
    link_type="one_on_one",
    owner_user_id=OWNER_ID,
    title="Intro call",
    description=None,
    duration_minutes=30,
    is_active=True,
    source_deleted=False,
    mogli_event_id=MOGLI,
    state="synced",
    org_id=ORG_A,
)
BOOKING = BookingState(
    booking_id=BOOKING_ID,
    link_id=LINK_ID,
    assigned_user_id=None,
    start_at=T0,
    end_at=T0 + timedelta(minutes=30),
    status="scheduled",
    related_record_id=CONTACT,
    source_deleted=False,
    org_id=ORG_A,
)


def activity(
    *, owner_org: str | None = ORG_A, assignee_org: str | None = ORG_A, round_robin: bool = False
) -> ActivityWork:
    """A booking of ORG_A on a written link of ORG_A, its owner and assignee in the given orgs."""
    link = dataclasses.replace(LINK, link_type="round_robin") if round_robin else LINK
    booking = dataclasses.replace(BOOKING, assigned_user_id=ASSIGNEE_ID) if round_robin else BOOKING
    return ActivityWork(
        booking=booking,
        link=link,
        owner=UserState(OWNER_ID, OWNER_SF, owner_org),
        assignee=UserState(ASSIGNEE_ID, ASSIGNEE_SF, assignee_org),
        activity_id=None,
        state="pending",
        version=1,
        attempts=0,
    )


@pytest.mark.parametrize("other", [ORG_B, None], ids=["another-org", "default-org"])
def test_round_robin_assignee_of_another_org_is_refused(other: str | None) -> None:
    """A round-robin booking whose assigned user belongs to another org (or the default org) fails."""
    action = event_action(activity(assignee_org=other, round_robin=True), OPTIONS)
    assert isinstance(action, RuleFailure)
    assert action.code is FailureCode.CROSS_ORG_USER
    role = f"the assigned user of booking {BOOKING_ID} (user {ASSIGNEE_ID})"
    assert action.message == f"{role} belongs to another org than the booking"
    assert action.waiting_for_user == ASSIGNEE_ID and action.waiting_for_link is None
    assert ASSIGNEE_SF not in action.message


def test_link_owner_of_another_org_is_refused_for_a_one_on_one_booking() -> None:
    """A one-on-one booking whose link owner now belongs to another org fails, waiting for that user."""
    action = event_action(activity(owner_org=ORG_B), OPTIONS)
    assert isinstance(action, RuleFailure) and action.code is FailureCode.CROSS_ORG_USER
    assert (
        "link owner of link" in action.message and "belongs to another org than the booking" in action.message
    )
    assert action.waiting_for_user == OWNER_ID


def test_users_of_the_bookings_org_pass() -> None:
    """Users of the booking's own org give an Event owned by the right user."""
    one_on_one = event_action(activity(assignee_org=ORG_B), OPTIONS)
    assert isinstance(one_on_one, UpsertEvent) and one_on_one.fields.owner_id == OWNER_SF
    round_robin = event_action(activity(owner_org=ORG_B, round_robin=True), OPTIONS)
    assert isinstance(round_robin, UpsertEvent) and round_robin.fields.owner_id == ASSIGNEE_SF


def test_tenancy_off_every_org_is_none_and_nothing_is_refused() -> None:
    """With every org_id None (tenancy off) the rule never refuses."""
    work = activity(owner_org=None, assignee_org=None, round_robin=True)
    work = dataclasses.replace(
        work,
        booking=dataclasses.replace(work.booking, org_id=None),
        link=dataclasses.replace(LINK, link_type="round_robin", org_id=None),
    )
    assert isinstance(event_action(work, OPTIONS), UpsertEvent)


def test_mogli_event_owner_of_another_org_is_refused() -> None:
    """A link whose owner belongs to another org than the link's gets no Mogli Event."""
    refused = mogli_event_for(LinkWork(LINK, UserState(OWNER_ID, OWNER_SF, ORG_B), version=1, attempts=0))
    assert isinstance(refused, RuleFailure) and refused.code is FailureCode.CROSS_ORG_USER
    assert (
        refused.message
        == f"the link owner of link {LINK_ID} (user {OWNER_ID}) belongs to another org than the link"
    )
    fine = mogli_event_for(LinkWork(LINK, UserState(OWNER_ID, OWNER_SF, ORG_A), version=1, attempts=0))
    assert not isinstance(fine, RuleFailure) and fine.owner_id == OWNER_SF


def test_cross_org_is_checked_before_the_users_connection() -> None:
    """A user of another org without a Salesforce user is refused as cross-org, not as not connected."""
    work = activity(round_robin=True)
    work = dataclasses.replace(work, assignee=UserState(ASSIGNEE_ID, None, ORG_B))
    action = event_action(work, OPTIONS)
    assert isinstance(action, RuleFailure) and action.code is FailureCode.CROSS_ORG_USER


def test_cross_org_waits_for_the_user() -> None:
    """CROSS_ORG_USER is a waiting code: it clears when the user's row changes."""
    assert FailureCode.CROSS_ORG_USER in WAITING_CODES & USER_WAITING_CODES
    # ingest requeues on a user change exactly the rows failed with a code that waits for a user
    assert set(ingest.USER_WAITING_CODES) == {c.value for c in USER_WAITING_CODES}
