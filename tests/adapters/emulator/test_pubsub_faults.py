"""Faults of the emulator's Pub/Sub API seen by a plain gRPC client: a cut stream, a session expired
mid-stream, keepalives while idle, and the same API over TLS with the emulator's CA."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from bridge.emulator.server import EmulatorStartError, start_emulator
from bridge.salesforce.pubsub_api import pubsub_api_pb2 as pb
from bridge.salesforce.pubsub_api import pubsub_api_pb2_grpc as pb_grpc
from tests.adapters.emulator.pubsub_support import (
    EVENTS,
    PubSubOrg,
    Requests,
    events_until,
    fetch,
    next_response,
    org_file_with,
    pubsub_emulator,
    trailer,
    wait_subscribed,
)

AUTH_ERROR = "sfdc.platform.eventbus.grpc.service.auth.error"


@pytest.fixture
async def org(tmp_path: Path) -> AsyncIterator[PubSubOrg]:
    """The emulator process serving plaintext gRPC, with a logged-in REST side."""
    async with pubsub_emulator(tmp_path) as running:
        yield running


async def test_a_cut_stream_ends_the_call_unavailable(org: PubSubOrg) -> None:
    """The control API's cut ends an open Subscribe call with UNAVAILABLE, as a reset HTTP/2 stream does."""
    requests = Requests()
    requests.send(fetch())
    async with org.stub() as stub:
        call = stub.Subscribe(requests, metadata=org.metadata())
        await wait_subscribed(org)
        assert (await org.control("POST", "/pubsub/cut"))["cut"] == 1
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            while True:
                await next_response(call)
    stats = await org.control("GET", "/pubsub/stats")
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert (stats["open_streams"], stats["cut_streams"]) == (0, 1)


async def test_a_session_expired_mid_stream_ends_it_with_the_auth_error(org: PubSubOrg) -> None:
    """After sessions/expire, an open stream ends UNAUTHENTICATED with the documented error code."""
    requests = Requests()
    requests.send(fetch())
    async with org.stub() as stub:
        call = stub.Subscribe(requests, metadata=org.metadata())
        await wait_subscribed(org)
        assert (await org.control("POST", "/sessions/expire"))["expired"] >= 1
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            while True:
                await next_response(call)
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert trailer(caught.value, "error-code") == AUTH_ERROR


async def test_an_idle_stream_gets_keepalives_with_the_latest_replay_id(org: PubSubOrg) -> None:
    """With nothing to send, keepalive responses carry no events and the replay id the stream stands at."""
    await org.create_event("Already there")
    await org.control("POST", "/pubsub/faults", {"keepalive_seconds": 0.2})
    requests = Requests()
    requests.send(fetch(preset=pb.EARLIEST, num=5))
    async with org.stub() as stub:
        call = stub.Subscribe(requests, metadata=org.metadata())
        [event] = await events_until(call, 1)
        keepalives = [await next_response(call) for _ in range(2)]
        call.cancel()
    assert [len(k.events) for k in keepalives] == [0, 0]
    assert [k.latest_replay_id for k in keepalives] == [event.replay_id] * 2
    assert [k.pending_num_requested for k in keepalives] == [4, 4]


async def test_tls_serves_the_same_api_with_the_emulator_ca(tmp_path: Path) -> None:
    """With --tls the gRPC port speaks TLS with a certificate the emulator's CA signs; events flow."""
    async with pubsub_emulator(tmp_path, tls=True) as org:
        assert org.ca_file is not None
        requests = Requests()
        requests.send(fetch(EVENTS, num=1))
        async with org.stub() as stub:
            call = stub.Subscribe(requests, metadata=org.metadata())
            await wait_subscribed(org)
            await org.create_event("Over TLS")
            [event] = await events_until(call, 1)
            call.cancel()
        assert event.event.schema_id
        plain = grpc.aio.insecure_channel(f"localhost:{org.grpc_port}")
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pb_grpc.PubSubStub(plain).GetTopic(
                    pb.TopicRequest(topic_name=EVENTS), metadata=org.metadata()
                )
        finally:
            await plain.close()
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_a_taken_grpc_port_is_a_start_error_naming_the_option() -> None:
    """Asking for a gRPC port another socket holds refuses to start, naming --grpc-port."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with pytest.raises(EmulatorStartError, match="--grpc-port"):
            await start_emulator(port=0, grpc_port=taken)


async def test_latency_delays_responses_and_events_still_flow(org: PubSubOrg) -> None:
    """With the latency fault on, every response waits first (the fault counts each hit); none is lost."""
    set_to = await org.control("POST", "/pubsub/faults", {"latency_ms": 50})
    assert set_to["latency_ms"] == 50
    requests = Requests()
    requests.send(fetch(num=2))
    async with org.stub() as stub:
        call = stub.Subscribe(requests, metadata=org.metadata())
        await wait_subscribed(org)
        await org.create_event("Slow one")
        await org.create_event("Slow two")
        events = await events_until(call, 2)
        call.cancel()
    stats = await org.control("GET", "/pubsub/stats")
    assert len(events) == 2
    assert stats["delayed_responses"] >= 1


async def test_the_keepalive_interval_comes_from_the_org_file(tmp_path: Path) -> None:
    """`[streaming] pubsub_keepalive_seconds` sets the idle keepalive with no control call."""
    org_file = org_file_with(tmp_path, "pubsub_keepalive_seconds = 0.2")
    async with pubsub_emulator(tmp_path, org_file=org_file) as org:
        requests = Requests()
        requests.send(fetch())
        async with org.stub() as stub:
            call = stub.Subscribe(requests, metadata=org.metadata())
            keepalive = await next_response(call)
            call.cancel()
    assert keepalive.events == []
    assert len(keepalive.latest_replay_id) == 8


@pytest.mark.parametrize("value", ["0", "-1", '"soon"'])
async def test_a_bad_keepalive_in_the_org_file_is_a_start_error(tmp_path: Path, value: str) -> None:
    """A keepalive that is not a positive number refuses to start, naming the key."""
    org_file = org_file_with(tmp_path, f"pubsub_keepalive_seconds = {value}")
    with pytest.raises(EmulatorStartError, match="pubsub_keepalive_seconds"):
        await start_emulator(port=0, org_file=org_file, grpc_port=0)
