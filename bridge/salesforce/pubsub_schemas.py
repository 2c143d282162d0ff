"""Pub/Sub events decoded with their writer schemas: each schema fetched once by id (`GetSchema`) and cached.

An event that cannot be decoded (unknown schema, bad payload, not a change event) is logged and skipped, as
over CometD; any other gRPC failure of `GetSchema` ends the call like a failure of the stream itself.
"""

from __future__ import annotations

from typing import Any

import grpc
import structlog

from bridge.config import SalesforceObjectNames
from bridge.records.inbound import SalesforceChange
from bridge.salesforce.avro_events import EventSchema, UndecodableEvent, decode_event
from bridge.salesforce.pubsub_api import pubsub_api_pb2 as pb
from bridge.salesforce.pubsub_api import pubsub_api_pb2_grpc as pb_grpc
from bridge.salesforce.pubsub_positions import replay_number

log = structlog.get_logger(__name__)

Metadata = tuple[tuple[str, str], ...]


class EventDecoder:
    """Received Pub/Sub events to `SalesforceChange`s, with the writer schemas cached by id."""

    def __init__(self, names: SalesforceObjectNames) -> None:
        self._names = names
        self._schemas: dict[str, EventSchema] = {}

    async def decode(
        self, stub: pb_grpc.PubSubStub, channel: str, event: Any, metadata: Metadata
    ) -> SalesforceChange | None:
        """The change a `ConsumerEvent` of `channel` carries; None (logged) when it cannot be decoded."""
        schema_id = event.event.schema_id
        schema = self._schemas.get(schema_id)
        try:
            if schema is None:
                schema = await self._fetch_schema(stub, schema_id, metadata)
            change = decode_event(
                schema,
                event.event.payload,
                channel=channel,
                replay_id=replay_number(event.replay_id),
                names=self._names,
            )
        except UndecodableEvent as exc:
            log.warning("streaming.message_undecodable", channel=channel, error=str(exc)[:300])
            return None
        if change is None:
            log.warning("streaming.message_undecodable", channel=channel)
        return change

    async def _fetch_schema(
        self, stub: pb_grpc.PubSubStub, schema_id: str, metadata: Metadata
    ) -> EventSchema:
        """The writer schema by id, fetched once (GetSchema) and cached."""
        try:
            info = await stub.GetSchema(pb.SchemaRequest(schema_id=schema_id), metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not grpc.StatusCode.NOT_FOUND:
                raise
            raise UndecodableEvent(f"schema {schema_id} not found") from exc
        schema = self._schemas[schema_id] = EventSchema.from_json(schema_id, info.schema_json)
        return schema
