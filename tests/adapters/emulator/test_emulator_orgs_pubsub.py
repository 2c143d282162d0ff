"""The one Pub/Sub API of an emulator hosting many orgs routes each call by its `tenantid` metadata and
checks the access token against that org alone."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any

import fastavro
import grpc
import pytest

from bridge.salesforce.pubsub_api import pubsub_api_pb2 as pb
from bridge.salesforce.pubsub_api import pubsub_api_pb2_grpc as pb_grpc
from tests.adapters.emulator.conftest import EmulatorClient, running_emulator
from tests.adapters.emulator.emulator_orgs_support import HostedOrg, new_org
from tests.adapters.emulator.pubsub_support import Requests, events_until, fetch, trailer

TOPIC = "/data/ContactChangeEvent"
AUTH_ERROR_CODE = "sfdc.platform.eventbus.grpc.service.auth.error"


@pytest.fixture
async def emulator_grpc() -> AsyncIterator[EmulatorClient]:
    """The main org over HTTP with the Pub/Sub API on a free port."""
    async with running_emulator(grpc_port=0) as client:
        yield client


@pytest.fixture
async def stub(emulator_grpc: EmulatorClient) -> AsyncIterator[pb_grpc.PubSubStub]:
    """A Pub/Sub stub on the emulator's one gRPC port."""
    channel = grpc.aio.insecure_channel(f"localhost:{emulator_grpc.running.grpc_port}")
    try:
        yield pb_grpc.PubSubStub(channel)
    finally:
        await channel.close()


async def record_ids(
    stub: pb_grpc.PubSubStub, events: list[pb.ConsumerEvent], meta: tuple[tuple[str, str], ...]
) -> list[str]:
    """The record ids the delivered change events name (each payload decoded with its schema)."""
    ids: list[str] = []
    for event in events:
        info = await stub.GetSchema(pb.SchemaRequest(schema_id=event.event.schema_id), metadata=meta)
        schema = fastavro.parse_schema(json.loads(info.schema_json))
        body: dict[str, Any] = fastavro.schemaless_reader(io.BytesIO(event.event.payload), schema, schema)
        ids.extend(body["ChangeEventHeader"]["recordIds"])
    return ids


def metadata(org: HostedOrg, token: str, tenant: str | None = None) -> tuple[tuple[str, str], ...]:
    """The call metadata of a Salesforce Pub/Sub client for `org` (another tenant id when given)."""
    return (("accesstoken", token), ("instanceurl", org.url), ("tenantid", tenant or org.org_id))


async def test_an_org_gets_its_grpc_address_and_its_topics(
    emulator_grpc: EmulatorClient, stub: pb_grpc.PubSubStub
) -> None:
    """POST /__emulator/orgs names the shared gRPC address; GetTopic with the org's token and tenant id
    answers that org's topic, carrying the org's id as tenant_guid."""
    reply = await emulator_grpc.request("POST", "/__emulator/orgs", json={"name": "A"})
    assert reply.body["grpc"] == f"localhost:{emulator_grpc.running.grpc_port}"
    org = await new_org(emulator_grpc, "B")
    token = await org.client_token()

    info = await stub.GetTopic(pb.TopicRequest(topic_name=TOPIC), metadata=metadata(org, token))

    assert info.tenant_guid == org.org_id
    assert info.can_subscribe
    logged = (await org.control("GET", "/requests"))["requests"]
    assert [(r["method"], r["path"], r["status"]) for r in logged][-1] == (
        "GRPC",
        "/eventbus.v1.PubSub/GetTopic",
        200,
    )
    assert token not in str(logged)


@pytest.mark.parametrize("tenant", ["other", "unknown"])
async def test_a_token_is_refused_under_any_tenant_but_its_own(
    emulator_grpc: EmulatorClient, stub: pb_grpc.PubSubStub, tenant: str
) -> None:
    """Org A's token under org B's tenant id, or under a tenant id no org has, answers UNAUTHENTICATED
    with the auth error code, as a bad token does."""
    org_a, org_b = await new_org(emulator_grpc, "A"), await new_org(emulator_grpc, "B")
    token_a = await org_a.client_token()
    tenant_id = org_b.org_id if tenant == "other" else "00DXX0000000001"

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GetTopic(pb.TopicRequest(topic_name=TOPIC), metadata=metadata(org_a, token_a, tenant_id))

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert trailer(refused.value, "error-code") == AUTH_ERROR_CODE
    logged_a = [r for r in (await org_a.control("GET", "/requests"))["requests"] if r["method"] == "GRPC"]
    logged_b = [r for r in (await org_b.control("GET", "/requests"))["requests"] if r["method"] == "GRPC"]
    assert logged_a == []
    assert [(r["path"], r["status"]) for r in logged_b] == (
        [("/eventbus.v1.PubSub/GetTopic", 401)] if tenant == "other" else []
    )


async def test_subscribe_delivers_only_the_org_s_own_events(
    emulator_grpc: EmulatorClient, stub: pb_grpc.PubSubStub
) -> None:
    """A subscription of org B from the earliest event gets B's Contact change and none of org A's."""
    org_a, org_b = await new_org(emulator_grpc, "A"), await new_org(emulator_grpc, "B")
    token_a, token_b = await org_a.client_token(), await org_b.client_token()
    await org_a.rest("POST", "/sobjects/Contact", token_a, {"LastName": "In A"})
    own = (await org_b.rest("POST", "/sobjects/Contact", token_b, {"LastName": "In B"})).body["id"]
    await org_a.rest("POST", "/sobjects/Contact", token_a, {"LastName": "In A too"})
    requests = Requests()
    requests.send(fetch(TOPIC, preset=pb.EARLIEST, num=10))

    meta = metadata(org_b, token_b)
    call = stub.Subscribe(requests, metadata=meta)
    events = await events_until(call, 1)
    call.cancel()

    assert await record_ids(stub, events, meta) == [own]
