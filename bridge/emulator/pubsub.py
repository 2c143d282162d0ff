"""The emulator's Pub/Sub API (`eventbus.v1.PubSub` over gRPC): the same org, bus and allocation as CometD.

Subscribe reads the channel logs of the event bus (bus.py) with the same replay ids, filters and retention
as the CometD endpoint, and counts each delivered event in the CometD service's daily allocation. Flow
control is by `num_requested`: at most 100 per request, adding up, never more events sent than requested.
Replay ids and errors as the client sees them are in pubsub_wire.py. A session that expires (control
route sessions/expire) ends open streams with the authentication error at their next check. Faults for
tests (control API under `/__emulator/pubsub/`): cut every open stream, add latency before each response,
change the keepalive.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from aiohttp import web

from bridge.emulator.bus import InvalidReplayId
from bridge.emulator.context import json_response
from bridge.emulator.contracts import change_event_channel
from bridge.emulator.control import PREFIX
from bridge.emulator.pubsub_avro import AvroSchemas
from bridge.emulator.pubsub_wire import (
    AUTH_ERROR,
    AUTH_MESSAGE,
    EVENTS_INVALID,
    REPLAY_ID_INVALID,
    SCHEMA_NOT_FOUND,
    TOPIC_NOT_FOUND,
    PubSubAbort,
    abort,
    decode_replay_id,
    encode_replay_id,
    limit_exceeded,
    replay_id_corrupted,
)
from bridge.emulator.state import EmulatorState
from bridge.salesforce.pubsub_api import pubsub_api_pb2 as pb
from bridge.salesforce.pubsub_api import pubsub_api_pb2_grpc as pb_grpc

log = structlog.get_logger(__name__)

MAX_NUM_REQUESTED = 100
# Documented: with nothing to send, the server sends a keepalive (no events) about every 270 seconds.
DEFAULT_KEEPALIVE_SECONDS = 270.0
KEEPALIVE_KEY = "pubsub_keepalive_seconds"
# How often an idle stream checks that its session is still alive.
_TOKEN_CHECK_SECONDS = 0.2
CUT_DETAILS = "RST_STREAM closed stream"


@dataclass(eq=False)
class _Stream:
    """One open Subscribe call."""

    token: str
    channel: str
    cursor: int
    pending: int = 0
    cut: bool = False
    refused: PubSubAbort | None = None  # a later FetchRequest the stream must end on
    wake: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class PubSubFaults:
    """Test faults of the gRPC endpoint (control API)."""

    latency_ms: int = 0
    keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS
    delayed_responses: int = 0  # how often the latency fault hit
    cut_streams: int = 0  # how many streams the cut fault ended


class PubSubService(pb_grpc.PubSubServicer):  # type: ignore[misc]
    """Subscribe, GetSchema and GetTopic for one emulated org (Publish answers UNIMPLEMENTED)."""

    def __init__(self, state: EmulatorState, schemas: AvroSchemas | None = None) -> None:
        self._state = state
        # Hosted orgs share the main org's schema objects, hence its Avro schemas (built once per process).
        self.schemas = schemas or AvroSchemas(state.org.schema, state.org.streaming.cdc_entities)
        self.faults = PubSubFaults(keepalive_seconds=keepalive_seconds(state.org.streaming.extra))
        self._streams: set[_Stream] = set()
        # Positions handed out as latest_replay_id that are no event of their channel (a LATEST start, a
        # quiet channel): (channel, replay id) -> when, so a CUSTOM resubscription from one is honoured.
        self._positions: dict[tuple[str, int], float] = {}
        state.bus.add_listener(self)

    @property
    def state(self) -> EmulatorState:
        """The org this service serves."""
        return self._state

    # BusListener

    def events_published(self, channels: frozenset[str]) -> None:
        """Wake the streams reading any of these channels."""
        for stream in self._streams:
            if stream.channel in channels:
                stream.wake.set()

    def bus_reset(self) -> None:
        """Nothing of ours to reset (the allocation belongs to the CometD service)."""

    # Faults

    def cut_streams(self) -> int:
        """End every open Subscribe call as a broken HTTP/2 stream would; answers how many."""
        for stream in self._streams:
            stream.cut = True
            stream.wake.set()
        return len(self._streams)

    def open_streams(self) -> int:
        """How many Subscribe calls are open."""
        return len(self._streams)

    # RPC methods

    async def GetTopic(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """The topic's info; the schema id when the topic carries one entity's events."""
        rpc_id = str(uuid.uuid4())
        try:
            self._authenticate(context)
            self._check_topic(request.topic_name)
        except PubSubAbort as exc:
            await abort(context, exc, rpc_id)
        return pb.TopicInfo(
            topic_name=request.topic_name,
            tenant_guid=self._state.org.org_id,
            can_publish=False,
            can_subscribe=True,
            schema_id=self._topic_schema_id(request.topic_name),
            rpc_id=rpc_id,
        )

    async def GetSchema(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """The Avro schema (JSON) with this id."""
        rpc_id = str(uuid.uuid4())
        try:
            self._authenticate(context)
            found = self.schemas.by_id(request.schema_id)
            if found is None:
                message = f"schema {request.schema_id!r} not found"
                raise PubSubAbort(grpc.StatusCode.NOT_FOUND, SCHEMA_NOT_FOUND, message)
        except PubSubAbort as exc:
            await abort(context, exc, rpc_id)
            raise
        return pb.SchemaInfo(schema_json=found.schema_json, schema_id=found.schema_id, rpc_id=rpc_id)

    async def Subscribe(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """Stream events as requested; keepalives with the latest replay id while idle."""
        rpc_id = str(uuid.uuid4())
        stream: _Stream | None = None
        reader: asyncio.Task[None] | None = None
        try:
            token = self._authenticate(context)
            first = await anext(request_iterator, None)
            if first is None:
                return
            stream = _Stream(token=token, channel=first.topic_name, cursor=self._start(first))
            _request_more(stream, first.num_requested)
            self._check_stream(stream)
            self._streams.add(stream)
            reader = asyncio.create_task(_read_requests(stream, request_iterator))
            log.info("emulator.pubsub.subscribed", topic=stream.channel, preset=first.replay_preset)
            async for response in self._responses(stream, rpc_id):
                yield response
        except PubSubAbort as exc:
            if stream is not None:
                self._streams.discard(stream)  # gone before the client hears why
            await abort(context, exc, rpc_id)
        finally:
            if stream is not None:
                self._streams.discard(stream)
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

    # Subscribe internals

    async def _responses(self, stream: _Stream, rpc_id: str) -> AsyncIterator[Any]:
        """Events while requested and within the allocation; a keepalive after each idle interval."""
        loop = asyncio.get_running_loop()
        last_sent = loop.time()
        while True:
            self._check_stream(stream)
            events = self._take(stream)
            idle = loop.time() - last_sent >= self.faults.keepalive_seconds
            if events or idle:
                if self.faults.latency_ms:
                    self.faults.delayed_responses += 1
                    await asyncio.sleep(self.faults.latency_ms / 1000)
                yield pb.FetchResponse(
                    events=events,
                    latest_replay_id=self._position(stream),
                    rpc_id=rpc_id,
                    pending_num_requested=stream.pending,
                )
                last_sent = loop.time()
                continue
            stream.wake.clear()
            wait = min(_TOKEN_CHECK_SECONDS, self.faults.keepalive_seconds - (loop.time() - last_sent))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stream.wake.wait(), max(wait, 0.0))

    def _take(self, stream: _Stream) -> list[Any]:
        """The next requested events of the stream's channel, counted in the delivered-event allocation."""
        streaming = self._state.streaming
        used = streaming.stats()["delivered_events"]
        budget = min(stream.pending, self._state.org.streaming.daily_delivered_events - used)
        channel_log = self._state.bus.channel_log(stream.channel)
        if budget <= 0 or channel_log is None:
            return []
        picked = channel_log.after(stream.cursor, budget)
        events = []
        for stored in picked:
            schema = self.schemas.for_entity(stored.event.entity)
            if schema is None:
                continue
            producer = pb.ProducerEvent(
                id=str(uuid.uuid4()), schema_id=schema.schema_id, payload=schema.encode(stored.event)
            )
            events.append(pb.ConsumerEvent(event=producer, replay_id=encode_replay_id(stored.replay_id)))
        if picked:
            stream.cursor = picked[-1].replay_id
            stream.pending -= len(picked)
            streaming.set_delivered(used + len(events))
        return events

    def _start(self, first: Any) -> int:
        """The cursor of a new subscription from its first FetchRequest."""
        self._check_topic(first.topic_name)
        preset = first.replay_preset
        requested = -1 if preset == pb.LATEST else -2 if preset == pb.EARLIEST else None
        if requested is None:
            if not first.replay_id:
                message = (
                    "The replay_preset field in FetchRequest is set to ReplayPreset.CUSTOM, "
                    "but no Replay ID value is set"
                )
                raise PubSubAbort(grpc.StatusCode.INVALID_ARGUMENT, REPLAY_ID_INVALID, message)
            requested = decode_replay_id(first.replay_id)
        try:
            return self._state.bus.resolve_replay(first.topic_name, requested)
        except InvalidReplayId as exc:
            if self._handed_out(first.topic_name, requested):
                return requested
            raise replay_id_corrupted() from exc

    def _position(self, stream: _Stream) -> bytes:
        """The stream's cursor as latest_replay_id, remembered when it is no event of the channel."""
        channel_log = self._state.bus.channel_log(stream.channel)
        if channel_log is None or not channel_log.contains(stream.cursor):
            now = self._state.clock().timestamp()
            retention = self._state.org.streaming.retention_seconds
            for key in [k for k, at in self._positions.items() if at <= now - retention]:
                del self._positions[key]
            self._positions[(stream.channel, stream.cursor)] = now
        return encode_replay_id(stream.cursor)

    def _handed_out(self, channel: str, replay_id: int) -> bool:
        """True for a position this service gave on `channel` within the retention window: every event
        after it is still retained, since events are younger than the position."""
        at = self._positions.get((channel, replay_id))
        now = self._state.clock().timestamp()
        return at is not None and at > now - self._state.org.streaming.retention_seconds

    def _check_stream(self, stream: _Stream) -> None:
        if stream.refused is not None:
            raise stream.refused
        used = self._state.streaming.stats()["delivered_events"]
        if used >= self._state.org.streaming.daily_delivered_events:
            raise limit_exceeded()  # as CometD refuses every connect once the allocation is used up
        if stream.cut:
            self.faults.cut_streams += 1
            raise PubSubAbort(grpc.StatusCode.UNAVAILABLE, "", CUT_DETAILS)
        if self._state.tokens.session(stream.token) is None:
            raise PubSubAbort(grpc.StatusCode.UNAUTHENTICATED, AUTH_ERROR, AUTH_MESSAGE)

    def _check_topic(self, topic: str) -> None:
        if self._state.bus.channel_log(topic) is None:
            message = f"Topic {topic} not found or not accessible"
            raise PubSubAbort(grpc.StatusCode.NOT_FOUND, TOPIC_NOT_FOUND, message)

    def _topic_schema_id(self, topic: str) -> str:
        for entity in self._state.org.streaming.cdc_entities:
            schema = self.schemas.for_entity(entity)
            if change_event_channel(entity) == topic and schema is not None:
                return schema.schema_id
        return ""

    def _authenticate(self, context: grpc.aio.ServicerContext) -> str:
        """The access token of a call whose `accesstoken`, `instanceurl` and `tenantid` are good."""
        metadata = {key: value for key, value in context.invocation_metadata() or ()}
        token = str(metadata.get("accesstoken", ""))
        tenant = str(metadata.get("tenantid", ""))
        org_id = self._state.org.org_id
        good_tenant = tenant in (org_id, org_id[:15])
        if not token or not metadata.get("instanceurl") or not good_tenant:
            raise PubSubAbort(grpc.StatusCode.UNAUTHENTICATED, AUTH_ERROR, AUTH_MESSAGE)
        if self._state.tokens.session(token) is None:
            raise PubSubAbort(grpc.StatusCode.UNAUTHENTICATED, AUTH_ERROR, AUTH_MESSAGE)
        return token

    def register_control(self, app: web.Application) -> None:
        """Add the Pub/Sub fault routes to the emulator's control API."""
        app[PUBSUB] = self
        app.router.add_post(PREFIX + "/pubsub/cut", _post_cut)
        app.router.add_post(PREFIX + "/pubsub/faults", _post_faults)
        app.router.add_get(PREFIX + "/pubsub/stats", _get_stats)


PUBSUB = web.AppKey("emulator_pubsub", PubSubService)


def keepalive_seconds(streaming_extra: Mapping[str, Any]) -> float:
    """The org file's `[streaming] pubsub_keepalive_seconds`; ValueError naming the key when not positive."""
    value = streaming_extra.get(KEEPALIVE_KEY, DEFAULT_KEEPALIVE_SECONDS)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"streaming.{KEEPALIVE_KEY}: expected a positive number of seconds, not {value!r}")
    return float(value)


def _request_more(stream: _Stream, num_requested: int) -> None:
    """Add a FetchRequest's events to what the stream owes; one asking for none ends the stream."""
    if num_requested <= 0:
        message = "The requested number of events in a fetch request must be greater than zero"
        stream.refused = PubSubAbort(grpc.StatusCode.INVALID_ARGUMENT, EVENTS_INVALID, message)
    stream.pending += max(0, min(num_requested, MAX_NUM_REQUESTED))
    stream.wake.set()


async def _read_requests(stream: _Stream, request_iterator: AsyncIterator[Any]) -> None:
    """Add each later FetchRequest's `num_requested` to what the stream owes."""
    async for request in request_iterator:
        _request_more(stream, request.num_requested)


async def _post_cut(request: web.Request) -> web.Response:
    """POST /__emulator/pubsub/cut: every open Subscribe call ends with UNAVAILABLE."""
    return json_response({"cut": request.app[PUBSUB].cut_streams()})


async def _post_faults(request: web.Request) -> web.Response:
    """POST /__emulator/pubsub/faults {"latency_ms"?, "keepalive_seconds"?}: slow or idle-tune the API."""
    faults = request.app[PUBSUB].faults
    body = await request.json()
    if "latency_ms" in body:
        faults.latency_ms = int(body["latency_ms"])
    if "keepalive_seconds" in body:
        faults.keepalive_seconds = float(body["keepalive_seconds"])
    return json_response({"latency_ms": faults.latency_ms, "keepalive_seconds": faults.keepalive_seconds})


async def _get_stats(request: web.Request) -> web.Response:
    """GET /__emulator/pubsub/stats: open Subscribe calls and how often each fault hit."""
    service = request.app[PUBSUB]
    faults = service.faults
    body = {
        "open_streams": service.open_streams(),
        "delayed_responses": faults.delayed_responses,
        "cut_streams": faults.cut_streams,
    }
    return json_response(body)


async def start_grpc(
    service: pb_grpc.PubSubServicer, host: str, port: int, *, cert_chain: bytes | None, key: bytes | None
) -> tuple[grpc.aio.Server, int]:
    """Serve one org's service or the router over every org on `host:port` (TLS with a cert chain)."""
    server = grpc.aio.server()
    pb_grpc.add_PubSubServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    address = f"{host}:{port}"
    if cert_chain is not None and key is not None:
        bound = server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert_chain)]))
    else:
        bound = server.add_insecure_port(address)
    await server.start()
    log.info("emulator.pubsub.started", port=bound, tls=cert_chain is not None)
    return server, bound
