"""Echo recognition by commitUser, and a person's edit to a row in flight (defect 6)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from bridge.config import SalesforceObjectNames
from bridge.records.inbound import ChangeType
from bridge.rules.policy import IgnoreReason, PolicyOptions, WriteBack, decide
from bridge.salesforce.auth import decode_token_response, identity_user_id
from bridge.salesforce.changes import decode_change
from tests.unit.test_policy import ACTIVITY, EVENT_ID, KNOWN, OTHER_OWNER, T0, T1, event

BRIDGE_USER = "005000000000009AAA"
PERSON = "005000000000003AAA"
OPTIONS = PolicyOptions(integration_user_id=BRIDGE_USER)
PENDING = replace(KNOWN, activities_by_sfid={EVENT_ID: replace(ACTIVITY, state="pending")})
ROUND_ROBIN_PENDING = replace(
    KNOWN,
    activities_by_sfid={EVENT_ID: replace(ACTIVITY, state="pending", link_type="round_robin")},
)


def test_a_change_committed_by_the_integration_user_is_an_echo_without_any_change_origin() -> None:
    """Collections writes carry no `client=`: commitUser alone marks the bridge's own change."""
    change = replace(event(ChangeType.UPDATE, origin="", start_at=T1), commit_user=BRIDGE_USER)
    assert decide(change, KNOWN, OPTIONS).ignored is IgnoreReason.ECHO


def test_change_origin_stays_a_further_line() -> None:
    """A change naming our client in changeOrigin is an echo even when commitUser is another user."""
    origin = "com/salesforce/api/rest/60.0;client=mogli-bridge"
    change = replace(event(ChangeType.UPDATE, origin=origin, start_at=T1), commit_user=PERSON)
    assert decide(change, KNOWN, OPTIONS).ignored is IgnoreReason.ECHO


def test_a_persons_change_is_not_an_echo() -> None:
    """A person's move of a synced Event is acted on (restored) although the bridge knows its own user."""
    change = replace(event(ChangeType.UPDATE, origin="", start_at=T1), commit_user=PERSON)
    decision = decide(change, KNOWN, OPTIONS)
    assert [(a.action, a.requeue) for a in decision.activities] == [("salesforce.time_changed", True)]


def test_a_persons_time_edit_on_a_pending_row_is_written_back() -> None:
    """Under write_back, a person's move of an Event whose row is in flight is written back to the booking
    and the row requeued (the in-flight write predates the edit), never counted as unchanged."""
    options = replace(OPTIONS, on_time_changed="write_back")
    moved = T0 + timedelta(hours=2)
    change = replace(
        event(ChangeType.UPDATE, origin="", start_at=moved, end_at=moved + timedelta(minutes=30)),
        commit_user=PERSON,
    )
    decision = decide(change, PENDING, options)
    assert decision.ignored is None
    assert decision.write_backs == (WriteBack("b1", start_at=moved, end_at=moved + timedelta(minutes=30)),)
    (accepted,) = decision.activities
    assert (accepted.action, accepted.start_at, accepted.requeue) == ("salesforce.time_changed", moved, True)


def test_a_persons_reassignment_of_a_pending_round_robin_row_is_written_back() -> None:
    """Under the owner write_back rule, a person's reassignment of a row in flight reaches the scheduler."""
    options = replace(OPTIONS, on_owner_changed="write_back")
    change = replace(event(ChangeType.UPDATE, origin="", owner_id=OTHER_OWNER), commit_user=PERSON)
    decision = decide(change, ROUND_ROBIN_PENDING, options)
    assert decision.write_backs == (WriteBack("b1", assigned_salesforce_user_id=OTHER_OWNER),)
    (accepted,) = decision.activities
    assert (accepted.owner_salesforce_id, accepted.requeue) == (OTHER_OWNER, True)


def test_a_reread_of_a_pending_row_still_waits_for_the_owner() -> None:
    """A re-read has no commitUser: the owner on a row in flight may be its own write, so nothing is done."""
    change = event(ChangeType.UNDELETE, owner_id=OTHER_OWNER)
    assert decide(change, PENDING, replace(OPTIONS, on_owner_changed="write_back")).ignored is (
        IgnoreReason.UNCHANGED
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://login.salesforce.com/id/00D000000000001AAA/005000000000009AAA", BRIDGE_USER),
        ("https://x.my.salesforce.com/id/00D000000000001/005000000000009/", BRIDGE_USER),
        ("https://x.my.salesforce.com/services/oauth2/userinfo", None),
        ("https://x/id/00D000000000001AAA/not-an-id", None),
        (None, None),
    ],
)
def test_identity_url_names_the_user(url: object, expected: str | None) -> None:
    """The token response's `id` URL ends in the user id (18 characters); anything else names nobody."""
    assert identity_user_id(url) == expected


def test_token_response_carries_the_integration_user() -> None:
    """The token's identity is kept beside the token."""
    body = {
        "access_token": "t",
        "instance_url": "https://x",
        "id": "https://login.salesforce.com/id/00D000000000001AAA/005000000000009AAA",
    }
    assert decode_token_response(body, 0.0).user_id == BRIDGE_USER


def test_commit_user_is_decoded_from_the_header() -> None:
    """`ChangeEventHeader.commitUser` becomes the change's commit_user (18 characters)."""
    message = {
        "channel": "/data/EventChangeEvent",
        "data": {
            "event": {"replayId": 7},
            "payload": {
                "ChangeEventHeader": {
                    "entityName": "Event",
                    "changeType": "UPDATE",
                    "recordIds": [EVENT_ID],
                    "commitTimestamp": 0,
                    "commitUser": "005000000000003",
                }
            },
        },
    }
    change = decode_change(message, SalesforceObjectNames())
    assert change is not None and change.commit_user == PERSON
