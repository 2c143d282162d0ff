"""End to end: the daemon's /metrics says, per channel, whether its change stream is subscribed."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator

import pytest

from bridge.devtools.localpg import free_port
from bridge.devtools.stack import wait_until

from .conftest import Stack
from .inbound_support import inbound_stack, org_overrides, transport, wait_streaming

__all__ = ["inbound_stack", "org_overrides", "transport"]

SAMPLE = re.compile(r'^mogli_bridge_stream_subscribed\{channel="([^"]+)"\} (\S+)$', re.MULTILINE)


@pytest.fixture
def admin_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A free admin port for the daemon under test (through its environment)."""
    port = free_port()
    monkeypatch.setenv("MOGLI_BRIDGE_ADMIN__LISTEN", f"127.0.0.1:{port}")
    yield port


def subscribed(port: int) -> dict[str, float]:
    """channel -> value of mogli_bridge_stream_subscribed, from the daemon's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {channel: float(value) for channel, value in SAMPLE.findall(text)}


def test_the_gauge_is_1_per_subscribed_channel_and_0_while_the_stream_is_cut(
    inbound_stack: Stack, transport: str, admin_port: int
) -> None:
    """Both transports: once subscribed, every watched channel reads 1. CometD: while the emulator answers
    /cometd with 503 the channels read 0, and 1 again once the fault is cleared."""
    stack = inbound_stack
    daemon = stack.daemon("subscribed")
    daemon.start()
    daemon.wait_started()
    wait_streaming(stack.emulator)
    wait_until(
        lambda: (values := subscribed(admin_port)) != {} and set(values.values()) == {1.0},
        timeout=60,
        what="every channel subscribed in /metrics",
    )
    if transport == "cometd":
        stack.emulator.add_fault(path="^/cometd/", status=503, error_code="SERVER_UNAVAILABLE")
        wait_until(lambda: set(subscribed(admin_port).values()) == {0.0}, timeout=60, what="channels at 0")
        stack.emulator.clear_faults()
        wait_until(lambda: set(subscribed(admin_port).values()) == {1.0}, timeout=60, what="channels at 1")
    assert daemon.terminate() == 0
