"""The emulator's Pub/Sub API, driven by a plain gRPC client from the generated stubs against the process:
authentication, replay presets, flow control, Avro payloads and their bitmaps, topics and errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from bridge import sfid
from bridge.salesforce.pubsub_api import pubsub_api_pb2 as pb
from tests.adapters.emulator.pubsub_support import (
    EVENTS,
    PubSubOrg,
    Requests,
    decode,
    events_until,
    fetch,
    next_response,
    pubsub_emulator,
    trailer,
    wait_subscribed,
)

AUTH_ERROR = "sfdc.platform.eventbus.grpc.service.auth.error"
REPLAY_ID_CORRUPTED = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
REPLAY_ID_INVALID = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.validation.failed"
EVENTS_INVALID = "sfdc.platform.eventbus.grpc.subscription.fetch.requested.events.invalid"
LIMIT_EXCEEDED = "sfdc.platform.eventbus.grpc.subscription.limit.exceeded"


@pytest.fixture
async def org(tmp_path: Path) -> AsyncIterator[PubSubOrg]:
    """The emulator process serving plaintext gRPC, with a logged-in REST side."""
    async with pubsub_emulator(tmp_path) as running:
        yield running


async def subscribe_error(org: PubSubOrg, request: pb.FetchRequest) -> grpc.aio.AioRpcError:
    """The error that ends a Subscribe call whose first request is `request`."""
    requests = Requests()
    requests.send(request)
    async with org.stub() as stub:
        call = stub.Subscribe(requests, metadata=org.metadata())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await next_response(call)
    return caught.value


async def delivered(org: PubSubOrg) -> int:
    """Events counted in the org's daily delivered-event allocation so far."""
    return int((await org.control("GET", "/stats"))["delivered_events"])


async def test_latest_delivers_a_new_change_as_avro_with_its_header(org: PubSubOrg) -> None:
    """LATEST with a good token: a change made after subscribing arrives, decodable by GetSchema's schema."""
    requests = Requests()
    requests.send(fetch(num=5))
    async with org.stub() as stub:
        call = stub.Subscribe(requests, metadata=org.metadata())
        await wait_subscribed(org)
        event_id = await org.create_event("Avro intro")
        [event] = await events_until(call, 1)
        record = await decode(stub, org, event)
        call.cancel()
    header = record["ChangeEventHeader"]
    assert header["entityName"] == "Event"
    assert header["changeType"] == "CREATE"
    assert sfid.same(header["recordIds"][0], event_id)
    assert record["Subject"] == "Avro intro"
    assert len(event.replay_id) == 8


async def test_a_bad_token_is_refused_with_the_documented_auth_error(org: PubSubOrg) -> None:
    """A token the org never issued: UNAUTHENTICATED with the auth error code and an rpc id in trailers."""
    async with org.stub() as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetTopic(pb.TopicRequest(topic_name=EVENTS), metadata=org.metadata("00D!bogus"))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert trailer(caught.value, "error-code") == AUTH_ERROR
    assert trailer(caught.value, "rpc-id") in (caught.value.details() or "")


async def test_a_wrong_tenant_id_is_refused(org: PubSubOrg) -> None:
    """A good token under another org's `tenantid` is refused with the auth error."""
    metadata = tuple((k, "00D000000000001AAA" if k == "tenantid" else v) for k, v in org.metadata())
    async with org.stub() as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetTopic(pb.TopicRequest(topic_name=EVENTS), metadata=metadata)
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert trailer(caught.value, "error-code") == AUTH_ERROR


async def test_get_topic_names_the_entity_schema(org: PubSubOrg) -> None:
    """GetTopic on an entity channel: subscribe allowed, publish not, the org id, a schema GetSchema knows."""
    async with org.stub() as stub:
        info = await stub.GetTopic(pb.TopicRequest(topic_name=EVENTS), metadata=org.metadata())
        schema = await stub.GetSchema(pb.SchemaRequest(schema_id=info.schema_id), metadata=org.metadata())
    assert (info.can_subscribe, info.can_publish) == (True, False)
    assert sfid.same(info.tenant_guid, org.org_id)
    assert schema.schema_id == info.schema_id
    assert '"name":"ChangeEventHeader"' in schema.schema_json


async def test_earliest_replays_retained_events_and_latest_does_not(org: PubSubOrg) -> None:
    """EARLIEST starts with the events already on the channel; LATEST only sees changes made after it."""
    old = await org.create_event("Before")
    early, late = Requests(), Requests()
    early.send(fetch(preset=pb.EARLIEST, num=10))
    late.send(fetch(preset=pb.LATEST, num=10))
    async with org.stub() as stub:
        early_call = stub.Subscribe(early, metadata=org.metadata())
        late_call = stub.Subscribe(late, metadata=org.metadata())
        await wait_subscribed(org, 2)
        new = await org.create_event("After")
        early_ids = [
            (await decode(stub, org, e))["ChangeEventHeader"]["recordIds"][0]
            for e in await events_until(early_call, 2)
        ]
        [late_event] = await events_until(late_call, 1)
        late_id = (await decode(stub, org, late_event))["ChangeEventHeader"]["recordIds"][0]
        early_call.cancel()
        late_call.cancel()
    assert [sfid.to18(i) for i in early_ids] == [sfid.to18(old), sfid.to18(new)]
    assert sfid.same(late_id, new)


async def test_custom_replays_strictly_after_the_given_replay_id(org: PubSubOrg) -> None:
    """CUSTOM with the replay id of the first of three events delivers the second and third only."""
    first, second, third = [await org.create_event(s) for s in ("One", "Two", "Three")]
    requests = Requests()
    requests.send(fetch(preset=pb.EARLIEST, num=1))
    async with org.stub() as stub:
        call = stub.Subscribe(requests, metadata=org.metadata())
        [one] = await events_until(call, 1)
        call.cancel()
        again = Requests()
        again.send(fetch(preset=pb.CUSTOM, replay_id=one.replay_id, num=10))
        resumed = stub.Subscribe(again, metadata=org.metadata())
        rest = await events_until(resumed, 2)
        ids = [(await decode(stub, org, e))["ChangeEventHeader"]["recordIds"][0] for e in rest]
        resumed.cancel()
    assert sfid.same((await decode_first(org, one)), first)
    assert [sfid.to18(i) for i in ids] == [sfid.to18(second), sfid.to18(third)]


async def decode_first(org: PubSubOrg, event: pb.ConsumerEvent) -> str:
    """The first record id of a delivered event."""
    async with org.stub() as stub:
        return str((await decode(stub, org, event))["ChangeEventHeader"]["recordIds"][0])


async def test_flow_control_never_sends_more_than_requested(org: PubSubOrg) -> None:
    """Five waiting events and two requested: two come, then only keepalives until two more are asked."""
    await org.control("POST", "/pubsub/faults", {"keepalive_seconds": 0.3})
    for n in range(5):
        await org.create_event(f"Queued {n}")
    requests = Requests()
    requests.send(fetch(preset=pb.EARLIEST, num=2))
    async with org.stub() as stub:
        call = stub.Subscribe(requests, metadata=org.metadata())
        first = await next_response(call)
        idle = [await next_response(call) for _ in range(3)]
        requests.send(fetch(num=2))
        more = await events_until(call, 2)
        call.cancel()
    assert (len(first.events), first.pending_num_requested) == (2, 0)
    assert [len(r.events) for r in idle] == [0, 0, 0]
    assert all(r.latest_replay_id == first.events[-1].replay_id for r in idle)
    assert len(more) == 2


async def test_a_request_counts_at_most_one_hundred(org: PubSubOrg) -> None:
    """num_requested 250 on an idle channel is owed as 100 (the documented maximum per request)."""
    await org.control("POST", "/pubsub/faults", {"keepalive_seconds": 0.2})
    requests = Requests()
    requests.send(fetch(num=250))
    async with org.stub() as stub:
        call = stub.Subscribe(requests, metadata=org.metadata())
        keepalive = await next_response(call)
        requests.send(fetch(num=30))
        later = await next_response(call)
        call.cancel()
    assert keepalive.events == [] and keepalive.pending_num_requested == 100
    assert later.pending_num_requested == 130


async def test_an_unknown_topic_answers_not_found(org: PubSubOrg) -> None:
    """Subscribing to a topic the org does not have ends the call with NOT_FOUND."""
    error = await subscribe_error(org, fetch("/data/NoSuchChangeEvent"))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert trailer(error, "error-code")
    assert trailer(error, "rpc-id")


@pytest.mark.parametrize("replay_id", [b"\x01\x02\x03", (10**12).to_bytes(8, "big")])
async def test_an_invalid_replay_id_answers_the_documented_error(org: PubSubOrg, replay_id: bytes) -> None:
    """CUSTOM with bytes that are no replay id, or an id never retained: INVALID_ARGUMENT, corrupted."""
    error = await subscribe_error(org, fetch(preset=pb.CUSTOM, replay_id=replay_id))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert trailer(error, "error-code") == REPLAY_ID_CORRUPTED


async def test_an_expired_replay_id_answers_the_documented_error(org: PubSubOrg) -> None:
    """The replay id of an event that has aged out of retention is refused like an invalid one."""
    await org.create_event("Soon purged")
    requests = Requests()
    requests.send(fetch(preset=pb.EARLIEST, num=1))
    async with org.stub() as stub:
        call = stub.Subscribe(requests, metadata=org.metadata())
        [event] = await events_until(call, 1)
        call.cancel()
    assert (await org.control("POST", "/streaming/purge", {"older_than_seconds": 0}))["purged"] >= 1
    error = await subscribe_error(org, fetch(preset=pb.CUSTOM, replay_id=event.replay_id))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert trailer(error, "error-code") == REPLAY_ID_CORRUPTED


async def test_each_delivered_event_counts_in_the_shared_allocation(org: PubSubOrg) -> None:
    """Delivered events count one each in DailyDeliveredPlatformEvents; once it is used up, the stream ends
    with the documented limit error instead of delivering more."""
    _, limits = await org.rest("GET", "/limits")
    allowed = int(limits["DailyDeliveredPlatformEvents"]["Max"])
    for n in range(3):
        await org.create_event(f"Counted {n}")
    before = await delivered(org)
    requests = Requests()
    requests.send(fetch(preset=pb.EARLIEST, num=2))
    async with org.stub() as stub:
        call = stub.Subscribe(requests, metadata=org.metadata())
        assert len(await events_until(call, 2)) == 2
        after_two = await delivered(org)
        await org.control("POST", "/streaming/delivered", {"used": allowed})
        requests.send(fetch(num=1))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            while True:
                assert (await next_response(call)).events == []
    assert after_two == before + 2
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert trailer(caught.value, "error-code") == LIMIT_EXCEEDED
    assert await delivered(org) == allowed


async def test_a_subscription_past_the_allocation_is_refused(org: PubSubOrg) -> None:
    """With the daily allocation used up, a new Subscribe ends at once with the limit error."""
    _, limits = await org.rest("GET", "/limits")
    await org.control(
        "POST", "/streaming/delivered", {"used": int(limits["DailyDeliveredPlatformEvents"]["Max"])}
    )
    error = await subscribe_error(org, fetch())
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert trailer(error, "error-code") == LIMIT_EXCEEDED


async def test_custom_without_a_replay_id_is_refused(org: PubSubOrg) -> None:
    """CUSTOM with no replay id: INVALID_ARGUMENT with the replay id validation error."""
    error = await subscribe_error(org, fetch(preset=pb.CUSTOM))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert trailer(error, "error-code") == REPLAY_ID_INVALID


@pytest.mark.parametrize("num", [0, -5])
async def test_a_request_for_no_events_is_refused(org: PubSubOrg, num: int) -> None:
    """num_requested of zero or less: INVALID_ARGUMENT with the requested-events error."""
    error = await subscribe_error(org, fetch(num=num))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert trailer(error, "error-code") == EVENTS_INVALID


async def test_a_keepalive_replay_id_resumes_with_custom(org: PubSubOrg) -> None:
    """The latest_replay_id of a keepalive on a channel with no events is a valid CUSTOM start: the changes
    made after it arrive, none is refused."""
    await org.control("POST", "/pubsub/faults", {"keepalive_seconds": 0.2})
    requests = Requests()
    requests.send(fetch(num=5))
    async with org.stub() as stub:
        call = stub.Subscribe(requests, metadata=org.metadata())
        keepalive = await next_response(call)
        call.cancel()
        created = await org.create_event("While away")
        again = Requests()
        again.send(fetch(preset=pb.CUSTOM, replay_id=keepalive.latest_replay_id, num=5))
        resumed = stub.Subscribe(again, metadata=org.metadata())
        [event] = await events_until(resumed, 1)
        resumed.cancel()
    assert keepalive.events == []
    assert sfid.same(await decode_first(org, event), created)
