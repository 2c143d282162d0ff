"""The token's identity URL `.../id/<orgId>/<userId>`: the user the bridge writes as and the org (tenant)."""

from __future__ import annotations

import pytest

from bridge.errors import SalesforceUnavailable
from bridge.salesforce.auth import decode_token_response, identity_org_id, identity_user_id

ORG15 = "00D5g000004Xyz1"
USER15 = "0055g00000AbCdE"
URL = f"https://login.salesforce.com/id/{ORG15}/{USER15}"


def test_a_token_response_carries_the_org_and_the_user_of_its_identity() -> None:
    """decode_token_response keeps both ids of the identity URL, each in its 18-character form."""
    body = {"access_token": "t", "instance_url": "https://x.my.salesforce.com/", "id": URL}
    token = decode_token_response(body, obtained_at=1.0)
    assert token.org_id is not None and token.org_id.startswith(ORG15) and len(token.org_id) == 18
    assert token.user_id is not None and token.user_id.startswith(USER15) and len(token.user_id) == 18
    assert token.org_id != token.user_id


@pytest.mark.parametrize(
    "identity",
    [
        None,
        42,
        "",
        "https://h/services/oauth2/userinfo",
        f"https://h/id/not-an-id/{USER15}",
        f"https://h/x/{ORG15}/{USER15}",
    ],
)
def test_an_unreadable_identity_gives_no_org(identity: object) -> None:
    """An identity URL that is missing or not `.../id/<orgId>/<userId>` gives no org id (never a guess)."""
    assert identity_org_id(identity) is None


def test_the_org_and_user_ids_are_read_from_their_own_places() -> None:
    """The org id is the part before the user id, with a trailing slash tolerated."""
    assert identity_org_id(URL + "/") == identity_org_id(URL)
    assert identity_user_id(URL) != identity_org_id(URL)
    assert identity_org_id(f"https://h/id/{ORG15}/not-a-user") is None


def test_a_token_response_without_an_instance_is_refused() -> None:
    """The identity does not make up for a missing instance_url: the response is unusable."""
    with pytest.raises(SalesforceUnavailable):
        decode_token_response({"access_token": "t", "id": URL}, obtained_at=1.0)
