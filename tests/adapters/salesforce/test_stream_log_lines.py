"""When a change stream loses its subscription, the log line names the host and the reason, never a token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from sfclient_support import Control
from structlog.testing import capture_logs
from test_pubsub_subscriber import FAST as PUBSUB_FAST
from test_pubsub_subscriber import _stream as pubsub_stream
from test_pubsub_subscriber import emulator
from test_streaming import FAST as COMETD_FAST

from bridge.config import SalesforceSettings
from bridge.emulator.server import RunningEmulator
from bridge.salesforce.auth import TokenManager
from bridge.salesforce.streaming import ChangeStream

__all__ = ["emulator"]

EVENTS = "/data/EventChangeEvent"
BOUND_SECONDS = 30


async def _until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) until the condition holds."""
    async with asyncio.timeout(BOUND_SECONDS):
        while not condition():  # noqa: ASYNC110 (the stream's state and the captured logs are plain objects)
            await asyncio.sleep(0.02)


async def _consume(items: AsyncIterator[Any]) -> None:
    async for _ in items:
        pass


def _lines(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == event]


async def test_a_cometd_rebuild_line_names_host_and_reason(
    http: aiohttp.ClientSession, tokens: TokenManager, control: Control, settings: SalesforceSettings
) -> None:
    """/cometd answering 503: `streaming.client_rebuild` names the instance's host and the error's first
    line; the access token appears in no line of the bridge."""
    stream = ChangeStream(tokens, settings, {}, channels=[EVENTS], timing=COMETD_FAST)
    items = stream.changes()
    with capture_logs() as logs:
        consumer = asyncio.ensure_future(_consume(items))
        try:
            await _until(lambda: stream.subscribed.all_subscribed)
            await control.fault(path="^/cometd/", status=503, error_code="SERVER_UNAVAILABLE")
            await _until(lambda: bool(_lines(logs, "streaming.client_rebuild")))
        finally:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
            await items.aclose()  # type: ignore[attr-defined]
    token = await tokens.get()
    line = _lines(logs, "streaming.client_rebuild")[0]
    assert line["host"] == urlsplit(token.instance_url).netloc
    assert line["error"] and "\n" not in line["error"]
    ours = [e for e in logs if not str(e["event"]).startswith("emulator.")]
    assert not [e for e in ours if token.access_token in str(e)]


async def test_a_pubsub_resubscribe_line_names_host_and_status(
    emulator: RunningEmulator, tokens: TokenManager, control: Control, settings: SalesforceSettings
) -> None:
    """The emulator cutting the Subscribe call: `pubsub.resubscribe` names the gRPC host, the status and the
    reason; the access token appears in no line of the bridge."""
    stream = pubsub_stream(emulator, tokens, settings, timing=PUBSUB_FAST)
    items = stream.changes()
    with capture_logs() as logs:
        consumer = asyncio.ensure_future(_consume(items))
        try:
            await _until(lambda: stream.subscribed.all_subscribed)
            assert (await control.post("pubsub/cut"))["cut"] == 1
            await _until(lambda: bool(_lines(logs, "pubsub.resubscribe")))
        finally:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
            await items.aclose()  # type: ignore[attr-defined]
    token = await tokens.get()
    line = _lines(logs, "pubsub.resubscribe")[0]
    assert line["host"] == f"127.0.0.1:{emulator.grpc_port}"
    assert line["status"] == "UNAVAILABLE" and line["reason"]
    ours = [e for e in logs if not str(e["event"]).startswith("emulator.")]
    assert not [e for e in ours if token.access_token in str(e)]
