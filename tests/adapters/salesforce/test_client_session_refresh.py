"""401 handling of the REST client: session invalidations close together never stop the daemon (defect 4)."""

from __future__ import annotations

import pytest
from sfclient_support import Control

from bridge.errors import ConfigurationError, TransientError
from bridge.salesforce.auth import TokenManager
from bridge.salesforce.rest import SalesforceClient


async def test_two_invalidations_in_one_request_force_a_second_refresh(
    client: SalesforceClient, tokens: TokenManager, control: Control
) -> None:
    """Two 401s in a row (the fresh token invalidated too) lead to one more real login; the call succeeds."""
    await client.limits()
    await control.fault(method="GET", path="/limits", status=401, error_code="INVALID_SESSION_ID", times=2)
    usage = await client.limits()
    assert usage.limit > 0
    assert tokens.token_requests == 3
    assert (await control.stats())["faults_fired"] == 2


async def test_three_invalidations_are_transient_and_retried(
    client: SalesforceClient, tokens: TokenManager, control: Control
) -> None:
    """A third 401 within one attempt is a transient failure: the attempt is retried (with the last token,
    no further login) and then succeeds."""
    await client.limits()
    calls = client.calls
    await control.fault(method="GET", path="/limits", status=401, error_code="INVALID_SESSION_ID", times=3)
    usage = await client.limits()
    assert usage.limit > 0
    assert tokens.token_requests == 3
    assert client.calls - calls == 4  # three refused sends, then the retried attempt
    assert (await control.stats())["faults_fired"] == 3


async def test_a_session_refused_for_good_is_transient_not_configuration(
    client: SalesforceClient, control: Control
) -> None:
    """Tokens refused on every try exhaust the retries as a transient error (systemd restarts those)."""
    await client.limits()
    await control.fault(method="GET", path="/limits", status=401, error_code="INVALID_SESSION_ID")
    with pytest.raises(TransientError) as info:
        await client.limits()
    assert not isinstance(info.value, ConfigurationError)
    assert "401" in str(info.value)
