"""End to end: a quiet change stream is kept for long (Salesforce's guidance for long-lived CometD
subscribers), and the daemon's output stays JSON lines (defect 13 of issue 11)."""

from __future__ import annotations

import json
import time

from .conftest import Stack
from .inbound_support import inbound_stack, org_overrides, transport, wait_streaming

__all__ = ["inbound_stack", "org_overrides", "transport"]

# The stack's streaming_stall_seconds is 5: the old silence watchdog rebuilt a quiet stream after 25 s.
IDLE_SECONDS = 35.0


def test_an_idle_stream_is_not_rebuilt_and_the_output_is_json(inbound_stack: Stack, transport: str) -> None:
    """A daemon with nothing to receive for 35 s keeps its streaming client (CometD: no
    `streaming.client_rebuild`, one handshake; Pub/Sub: no resubscription, its one Subscribe call still
    open), and everything it wrote to stdout and stderr is a JSON object per line."""
    stack = inbound_stack
    daemon = stack.daemon("idle")
    daemon.start()
    daemon.wait_started()
    wait_streaming(stack.emulator)
    time.sleep(IDLE_SECONDS)
    assert daemon.alive()
    if transport == "pubsub":
        assert stack.emulator.pubsub_stats()["open_streams"] == 1  # the custom channel's call
    else:
        assert stack.emulator.stats()["streaming_clients"] == 1
    assert daemon.terminate() == 0
    lines = [line for line in daemon.log_path.read_text(errors="replace").splitlines() if line.strip()]
    not_json = []
    for line in lines:
        try:
            parsed = json.loads(line)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            not_json.append(line)
    assert lines and not not_json, not_json[:10]
    events = [json.loads(line)["event"] for line in lines]
    chosen = [json.loads(line)["transport"] for line in lines if '"streaming.transport"' in line]
    assert chosen == [transport]
    if transport == "pubsub":
        assert "pubsub.resubscribe" not in events and "pubsub.token_refused" not in events
        assert "streaming.connected" not in events  # CometD was not used
        return
    assert "streaming.connected" in events
    assert "streaming.client_rebuild" not in events
    assert events.count("streaming.connected") == 1
