"""The Salesforce clients' retry lines name the host and the HTTP status or error, never a token or secret."""

from __future__ import annotations

import socket
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from sfclient_support import Control, FakeTime
from structlog.testing import capture_logs

from bridge.config import SalesforceSettings
from bridge.errors import SalesforceUnavailable
from bridge.salesforce.auth import TokenManager
from bridge.salesforce.rest import SalesforceClient


def _closed_port() -> int:
    """A local TCP port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _leaks(logs: list[dict[str, Any]], secrets: tuple[str, ...]) -> list[dict[str, Any]]:
    """The bridge's lines (not the emulator's own) that carry one of the secrets."""
    ours = [e for e in logs if not str(e["event"]).startswith("emulator.")]
    return [e for e in ours for secret in secrets if secret and secret in str(e)]


def _retries(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] in ("salesforce.retrying", "salesforce.retries_exhausted")]


async def test_a_503_retry_line_names_host_status_and_code_but_no_token(
    client: SalesforceClient, tokens: TokenManager, control: Control, settings: SalesforceSettings
) -> None:
    """A REST call answered 503 SERVER_UNAVAILABLE once: the retry line has the instance's host, the HTTP
    status and the error code; the access token and the client secret appear in no line."""
    token = await tokens.get()
    await control.fault(method="GET", path="/limits", status=503, error_code="SERVER_UNAVAILABLE", times=1)
    with capture_logs() as logs:
        await client.limits()
    [line] = _retries(logs)
    assert line["host"] == urlsplit(token.instance_url).netloc
    assert line["error"].startswith("HTTP 503 SERVER_UNAVAILABLE")
    secrets = (token.access_token, settings.client_secret, settings.password)
    assert not _leaks(logs, secrets)


async def test_an_unreachable_token_endpoint_line_names_host_and_reason(
    http: aiohttp.ClientSession, settings: SalesforceSettings, fake_time: FakeTime
) -> None:
    """A login URL at a closed port: each retry line names that host and the connection's refusal, and the
    password and client secret of the grant appear nowhere."""
    port = _closed_port()
    unreachable = replace(settings, login_url=f"http://127.0.0.1:{port}", max_attempts=2)
    tokens = TokenManager(http, unreachable, sleep=fake_time.sleep, clock=fake_time.clock)
    with capture_logs() as logs:
        try:
            await tokens.get()
        except SalesforceUnavailable as exc:
            message = str(exc)
        else:
            raise AssertionError("a closed port answered")
    lines = _retries(logs)
    assert lines and all(line["host"] == f"127.0.0.1:{port}" for line in lines)
    assert all("Cannot connect to host" in line["error"] for line in lines), lines
    assert "Cannot connect to host" in message
    secrets = (settings.client_secret, settings.password)
    assert not _leaks(logs, secrets)
