"""The stream-subscribed gauge, fed by both change-stream transports against the emulator: 1 once Salesforce
has taken the subscription, 0 when the emulator cuts the stream, 1 again once it is resubscribed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from sfclient_support import Control
from test_pubsub_subscriber import FAST as PUBSUB_FAST
from test_pubsub_subscriber import _stream as pubsub_stream
from test_pubsub_subscriber import emulator
from test_streaming import FAST as COMETD_FAST

from bridge.config import SalesforceSettings
from bridge.emulator.server import RunningEmulator
from bridge.metrics import BridgeMetrics
from bridge.salesforce.auth import TokenManager
from bridge.salesforce.streaming import ChangeStream

__all__ = ["emulator"]

EVENTS = "/data/EventChangeEvent"
BOUND_SECONDS = 30


class Watched:
    """A BridgeMetrics registry fed by a stream, and every state the stream reported for the channel."""

    def __init__(self, stream: ChangeStream | Any) -> None:
        self.metrics = BridgeMetrics()
        self.history: list[bool] = []
        stream.subscribed.observe(self.metrics.observe_subscription)
        stream.subscribed.observe(lambda channel, state: self.history.append(state))

    def gauge(self) -> float | None:
        """The exported sample of mogli_bridge_stream_subscribed{channel="/data/EventChangeEvent"}."""
        return self.metrics.registry.get_sample_value("mogli_bridge_stream_subscribed", {"channel": EVENTS})


async def _until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) until the condition holds."""
    async with asyncio.timeout(BOUND_SECONDS):
        while not condition():  # noqa: ASYNC110 (the stream's state is plain attributes)
            await asyncio.sleep(0.02)


async def _consume(items: AsyncIterator[Any]) -> None:
    async for _ in items:
        pass


async def test_cometd_gauge_follows_subscribe_cut_and_resubscribe(
    http: aiohttp.ClientSession, tokens: TokenManager, control: Control, settings: SalesforceSettings
) -> None:
    """CometD: 0 before the subscription, 1 once subscribed, 0 while the emulator answers /cometd with 503,
    1 again after the fault is cleared and the client rebuilt."""
    stream = ChangeStream(tokens, settings, {}, channels=[EVENTS], timing=COMETD_FAST)
    watched = Watched(stream)
    assert watched.gauge() == 0.0
    items = stream.changes()
    consumer = asyncio.ensure_future(_consume(items))
    try:
        await _until(lambda: watched.gauge() == 1.0)
        await control.fault(path="^/cometd/", status=503, error_code="SERVER_UNAVAILABLE")
        await _until(lambda: watched.gauge() == 0.0)
        async with http.delete(f"{control.url}/__emulator/faults") as response:
            assert response.status == 200
        await _until(lambda: watched.gauge() == 1.0)
        seen = list(watched.history)
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await items.aclose()  # type: ignore[attr-defined]
    assert (await control.stats())["faults_fired"] >= 1  # the cut really hit the stream
    assert seen[:3] == [False, True, False] and seen[-1] is True
    assert watched.gauge() == 0.0  # closed: nothing is subscribed any more


async def test_pubsub_gauge_follows_subscribe_cut_and_resubscribe(
    emulator: RunningEmulator, tokens: TokenManager, control: Control, settings: SalesforceSettings
) -> None:
    """Pub/Sub: 0 before the Subscribe call, 1 once it is open, 0 when the emulator cuts the call
    (UNAVAILABLE), 1 again after the resubscription."""
    stream = pubsub_stream(emulator, tokens, settings, timing=PUBSUB_FAST)
    watched = Watched(stream)
    assert watched.gauge() == 0.0
    items = stream.changes()
    consumer = asyncio.ensure_future(_consume(items))
    try:
        await _until(lambda: watched.gauge() == 1.0)
        assert (await control.post("pubsub/cut"))["cut"] == 1
        await _until(lambda: stream.rebuilds >= 1 and watched.gauge() == 1.0)
        seen = list(watched.history)
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await items.aclose()  # type: ignore[attr-defined]
    assert seen == [False, True, False, True]
    assert watched.gauge() == 0.0  # closed: nothing is subscribed any more
