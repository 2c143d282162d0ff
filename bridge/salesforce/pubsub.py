"""Change Data Capture over the Pub/Sub API (gRPC `eventbus.v1.PubSub`): the same stream items as CometD.

`PubSubStream` has `ChangeStream`'s public surface (`channels`, `changes()`, `committed()`, `close()`,
`rebuilds`, `received`, `allocation_exhausted`), yields the same `SalesforceChange` records (decoded by
`pubsub_schemas` and `avro_events` through `changes.decode_change`) and reports lost windows with the same
`WindowLost` and `Heartbeat` signals (`heartbeats`, shared with CometD), so the inbound pipeline takes
either transport behind one port.

- One Subscribe call per channel, authenticated by `accesstoken` / `instanceurl` / `tenantid` metadata from
  the TokenManager REST uses; an UNAUTHENTICATED call refreshes the token (once per failure, shared with
  REST) and resubscribes.
- Flow control: `batch` events at most are requested-and-unprocessed across all channels (each channel has
  an equal share): an event counts from the FetchRequest that asks for it until the consumer comes back for
  the next item, and more are requested only as the consumer takes them, so a slow consumer holds memory flat.
- Replay ids are opaque bytes, carried as ints that never collide with CometD's (`pubsub_positions`), so
  the ledger stores them as today and a stored id of one transport is never taken for the other's.
- Presets: CUSTOM after a stored Pub/Sub id, else LATEST; never EARLIEST (it would redeliver all of
  retention, each event counted against the delivered-event allocation). A stored CometD id, an invalid or
  expired replay id, or a channel without an id subscribed again after a gap (a restart, or its own call
  ended before anything gave it an id): `WindowLost` from the last known time, and LATEST; the consumer
  reconciles the window by change time.
- A cut stream (UNAVAILABLE, ...) is resubscribed with jittered exponential back-off after the last event
  handed to the consumer (which commits it before it asks for the next); events received but not yet handed
  over are dropped and delivered again. A keepalive's `latest_replay_id` becomes the resume position only
  when nothing of that channel is unprocessed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import structlog

from bridge.aio import Interrupted, next_or_stop
from bridge.config import SalesforceSettings
from bridge.errors import ConfigurationError, TransientError
from bridge.records.inbound import ReplayPosition, SalesforceChange, WindowLost
from bridge.redact import MAX_REASON_CHARS, scrub
from bridge.salesforce.allocation import is_daily_limit_error
from bridge.salesforce.auth import AccessToken, TokenManager
from bridge.salesforce.heartbeats import Heartbeats
from bridge.salesforce.pubsub_api import pubsub_api_pb2 as pb
from bridge.salesforce.pubsub_api import pubsub_api_pb2_grpc as pb_grpc
from bridge.salesforce.pubsub_positions import TopicState, replay_bytes, topics_from_positions
from bridge.salesforce.pubsub_schemas import EventDecoder
from bridge.salesforce.streaming import StreamItem, default_channels
from bridge.salesforce.subscribed import SubscribedChannels

log = structlog.get_logger(__name__)

MAX_NUM_REQUESTED = 100  # documented ceiling of one FetchRequest
_REPLAY_ERROR = "replayid"  # in the `error-code` trailer of an invalid or expired replay id
_LIMIT_ERROR = "subscription.limit.exceeded"  # in the `error-code` trailer: the allocation is used up
_CONFIG_STATUSES = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED}


@dataclass(frozen=True, slots=True)
class PubSubTiming:
    """Flow-control bound and reconnect pacing."""

    batch: int = 100  # events requested-and-unprocessed at most, across all channels
    check_seconds: float = 5.0  # how often an idle consumer loop looks at heartbeats
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 60.0
    heartbeat_seconds: float = 60.0  # as StreamTiming.heartbeat_seconds


@dataclass(frozen=True, slots=True)
class _Delivered:
    """A queue entry: an item of one call of one topic, with the replay id of a change."""

    topic: TopicState
    generation: int
    item: StreamItem
    raw_id: bytes | None = None


class _Refused(Exception):
    """The call ended: its gRPC status, Salesforce `error-code` trailer and details."""

    def __init__(self, status: grpc.StatusCode, error_code: str, details: str) -> None:
        super().__init__(f"{status.name}: {error_code} {details}")
        self.status, self.error_code, self.text = status, error_code, f"{error_code} {details}"

    @classmethod
    def of(cls, error: grpc.aio.AioRpcError) -> _Refused:
        """The refusal an AioRpcError carries."""
        codes = [str(v) for k, v in (error.trailing_metadata() or ()) if k == "error-code"]
        return cls(error.code(), codes[0] if codes else "", error.details() or "")


def _is_limit_refusal(text: str) -> bool:
    """True when a call's refusal says the delivered-event allocation is used up."""
    return is_daily_limit_error(text) or _LIMIT_ERROR in text.lower()


def channel_credentials(ca_bundle: str) -> grpc.ChannelCredentials:
    """TLS for the gRPC channel: the system's roots, or only `salesforce.ca_bundle` when set (as REST)."""
    if not ca_bundle:
        return grpc.ssl_channel_credentials()
    try:
        return grpc.ssl_channel_credentials(root_certificates=Path(ca_bundle).read_bytes())
    except OSError as exc:
        raise ConfigurationError(
            f"salesforce.ca_bundle {ca_bundle!r} is not a readable PEM certificate file ({exc})",
            "salesforce.ca_bundle",
        ) from exc


class PubSubStream:
    """Decoded change events from the watched channels over the Pub/Sub API, across reconnects."""

    def __init__(
        self,
        tokens: TokenManager,
        settings: SalesforceSettings,
        positions: Mapping[str, ReplayPosition],
        *,
        target: str,
        tenant_id: str,
        channels: Sequence[str] | None = None,
        timing: PubSubTiming = PubSubTiming(),
        credentials: grpc.ChannelCredentials | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._tokens = tokens
        self._names = settings.objects
        self._channels = tuple(channels or default_channels(settings))
        self._target, self._tenant_id, self._credentials = target, tenant_id, credentials
        self._timing = timing
        share = max(1, timing.batch // len(self._channels))
        self._topics, self._foreign = topics_from_positions(positions, self._channels, share)
        self._beats = Heartbeats(positions, interval=timing.heartbeat_seconds, clock=clock)
        self._clock = clock
        # Channels without an id: when their last call at LATEST was made (less the heartbeat lag).
        self._latest_since: dict[str, datetime] = {}
        self._refused_for_allocation: set[str] = set()  # channels whose last call the allocation ended
        self._events = EventDecoder(settings.objects)
        self._channel: grpc.aio.Channel | None = None
        self.subscribed = SubscribedChannels(self._channels)
        self.rebuilds = 0
        self.received = 0
        self.peak_held = 0  # the most events ever requested-and-unprocessed at once (flow-control proof)
        self.allocation_exhausted = False

    @property
    def channels(self) -> tuple[str, ...]:
        """The subscribed channels."""
        return self._channels

    @property
    def held(self) -> int:
        """Events requested and not yet processed, across channels."""
        return sum(t.held for t in self._topics.values())

    @property
    def buffered(self) -> int:
        """Events received and not yet handed to the consumer, across channels."""
        return sum(t.buffered for t in self._topics.values())

    def committed(self, channel: str, replay_id: int) -> None:
        """Called after the event's effect is in the ledger: a restart of `changes()` starts after it."""
        raw = replay_bytes(replay_id)
        if raw is not None and channel in self._topics:
            self._topics[channel].committed = raw

    async def changes(self) -> AsyncIterator[StreamItem]:
        """Yield changes forever; one task per channel keeps its Subscribe call open."""
        queue: asyncio.Queue[_Delivered] = asyncio.Queue(self._timing.batch + 4 * len(self._channels))
        for topic in self._topics.values():
            topic.resume, topic.in_hand, topic.buffered = topic.committed or topic.resume, 0, 0
        for lost in self._foreign:
            yield lost
        self._foreign = []
        self._channel = self._open_channel()
        # Plain tasks, not a TaskGroup: a failing one must not cancel the consumer's task wherever it is
        # (this generator yields); its error is raised here, at the next item.
        tasks = {asyncio.create_task(self._keep_subscribed(t, queue)) for t in self._topics.values()}
        try:
            async for item in self._deliver(queue, tasks):
                yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.subscribed.lose_all()
            await self.close()

    async def _deliver(
        self, queue: asyncio.Queue[_Delivered], tasks: set[asyncio.Task[None]]
    ) -> AsyncIterator[StreamItem]:
        """Hand items over one by one; the consumer coming back frees the last one's flow-control slot."""
        ended = asyncio.Event()  # a subscription task ended: it gave up
        for task in tasks:
            task.add_done_callback(lambda _: ended.set())
        while True:
            quiet = (t.name for t in self._topics.values() if t.live and t.committed is None)
            for beat in self._beats.due(quiet):
                yield beat
            entry = await next_or_stop(queue.get(), ended, self._timing.check_seconds)
            for task in tasks:
                if task.done():
                    task.result()  # a subscription gave up: its error ends the stream
            if isinstance(entry, Interrupted):
                continue  # timed out: time to look at heartbeats
            async for item in self._hand_over(entry):
                yield item

    async def _hand_over(self, entry: _Delivered) -> AsyncIterator[StreamItem]:
        topic, item = entry.topic, entry.item
        if entry.raw_id is None:
            yield item
            return
        if entry.generation != topic.generation:
            return  # its call ended; the new call delivers it again
        assert isinstance(item, SalesforceChange)
        topic.buffered -= 1
        topic.in_hand = 1
        # The consumer commits this change before it asks for the next: a new call resumes after it.
        topic.resume, topic.resume_time = entry.raw_id, item.commit_time
        yield item
        topic.in_hand = 0
        topic.more.set()

    def _open_channel(self) -> grpc.aio.Channel:
        if self._credentials is None:
            return grpc.aio.insecure_channel(self._target)
        return grpc.aio.secure_channel(self._target, self._credentials)

    async def _keep_subscribed(self, topic: TopicState, queue: asyncio.Queue[_Delivered]) -> None:
        """Subscribe again after every failure: a new token, a lost window, or back-off."""
        failures, token, stale = 0, None, None
        while True:
            try:
                # The current token (REST may have renewed it), or a new one after a refusal of `stale`.
                token = await (self._tokens.refresh(stale) if stale else self._tokens.get())
                stale = None
                # A quiet org answers nothing for minutes: a new call that is not refused at once is what
                # says the allocation is back (a refusal sets the flag again).
                self.allocation_exhausted = False
                await self._subscribe(topic, token, queue)
            except TransientError as exc:  # a token request failed: the org is unreachable for now
                failures += 1
                await self._back_off(topic, _Refused(grpc.StatusCode.UNAVAILABLE, "", str(exc)), failures)
                continue
            except _Refused as exc:
                failures = 0 if topic.live else failures  # the call had worked: count afresh
                self._live(topic, False)
                if _is_limit_refusal(exc.text):
                    self._refused_for_allocation.add(topic.name)
                else:
                    self._refused_for_allocation.discard(topic.name)
                if exc.status is grpc.StatusCode.UNAUTHENTICATED and failures == 0:
                    log.info("pubsub.token_refused", channel=topic.name)
                    stale, failures = token, 1
                    continue
                if _REPLAY_ERROR in exc.error_code.lower():
                    await queue.put(_Delivered(topic, topic.generation, self._replay_lost(topic)))
                    continue
                if exc.status in _CONFIG_STATUSES:
                    raise ConfigurationError(
                        f"Pub/Sub refuses {topic.name}: {exc.text}", "sync.channel"
                    ) from exc
                failures += 1
                self.rebuilds += 1
                self._note_refusal(exc.text)
                await self._back_off(topic, exc, failures)

    def _live(self, topic: TopicState, live: bool) -> None:
        """Whether the topic's call is subscribed, for the consumer loop and the stream-subscribed gauge."""
        topic.live = live
        self.subscribed.mark(topic.name, live)

    def _replay_lost(self, topic: TopicState) -> WindowLost:
        """The resume id is invalid or outside retention: LATEST, and the window since then is reported."""
        log.warning(
            "streaming.replay_window_lost",
            channel=topic.name,
            since=topic.resume_time.isoformat() if topic.resume_time else None,
        )
        lost = WindowLost(topic.name, topic.resume_time)
        topic.resume = None
        self._latest_since.pop(topic.name, None)  # this report covers the window; LATEST starts afresh
        return lost

    async def _back_off(self, topic: TopicState, exc: _Refused, failures: int) -> None:
        delay = min(self._timing.backoff_base_seconds * 2 ** (failures - 1), self._timing.backoff_max_seconds)
        delay *= random.uniform(0.5, 1.0)
        log.warning(
            "pubsub.resubscribe",
            channel=topic.name,
            host=self._target,
            status=exc.status.name,
            error_code=exc.error_code,
            reason=scrub(exc.text.strip())[:MAX_REASON_CHARS],
            delay=delay,
        )
        await asyncio.sleep(delay)

    def _note_refusal(self, text: str) -> None:
        if _is_limit_refusal(text) and not self.allocation_exhausted:
            self.allocation_exhausted = True
            log.error(
                "streaming.allocation_exhausted",
                reason="Salesforce refuses change events: the daily delivered-event allocation is used up",
            )

    def _metadata(self, token: AccessToken) -> tuple[tuple[str, str], ...]:
        return (
            ("accesstoken", token.access_token),
            ("instanceurl", token.instance_url),
            ("tenantid", self._tenant_id),
        )

    async def _subscribe(
        self, topic: TopicState, token: AccessToken, queue: asyncio.Queue[_Delivered]
    ) -> None:
        """One Subscribe call until it ends; _Refused for a gRPC error status."""
        assert self._channel is not None  # opened by changes()
        stub = pb_grpc.PubSubStub(self._channel)  # type: ignore[no-untyped-call]
        metadata = self._metadata(token)
        topic.generation += 1
        topic.requested, topic.buffered = 0, 0
        gap = self._latest_gap(topic.name) if topic.resume is None else None
        if gap is not None:
            await queue.put(_Delivered(topic, topic.generation, gap))
        call = stub.Subscribe(metadata=metadata)
        writer = asyncio.create_task(self._request_more(call, topic))
        try:
            await self._read(call, stub, topic, metadata, queue)
        except grpc.aio.AioRpcError as exc:
            raise _Refused.of(exc) from exc
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            call.cancel()

    def _latest_gap(self, channel: str) -> WindowLost | None:
        """A call at LATEST is about to start: the window an earlier one may have left unseen, if any.

        A channel that never got an id (a first run, a quiet filtered channel) can only be subscribed at
        LATEST. When its call ends (a cut, a refused token) before any event or keepalive gave it an id, the
        next call at LATEST skips everything published in between: that window is reported from the time
        the earlier call started (less the heartbeat lag, for events committed just before and still in
        flight), unless the heartbeats know an earlier time. Not while the org refuses delivery for the
        allocation: the allocation watch reconciles that blind window after the reset (the window's start
        is kept for the next report)."""
        gap = self._beats.gap(channel)
        if channel in self._refused_for_allocation and channel in self._latest_since:
            return gap
        since = self._latest_since.get(channel)
        self._latest_since[channel] = self._clock() - timedelta(seconds=self._timing.heartbeat_seconds)
        if gap is not None or since is None:
            return gap
        log.warning("streaming.resubscribed_without_replay_id", channel=channel, since=since.isoformat())
        return WindowLost(channel, since, reason="resubscribed_without_replay_id")

    def _fetch(self, topic: TopicState, count: int, *, first: bool) -> pb.FetchRequest:
        request = pb.FetchRequest(topic_name=topic.name, num_requested=count)
        if first and topic.resume is not None:
            request.replay_preset, request.replay_id = pb.CUSTOM, topic.resume
        elif first:
            request.replay_preset = pb.LATEST
        topic.requested += count
        self.peak_held = max(self.peak_held, self.held)
        return request

    async def _request_more(self, call: Any, topic: TopicState) -> None:
        """Top the call's requests up to the topic's share, as the consumer frees slots; at least half a
        share at a time, so that a fast consumer does not cost one FetchRequest per event."""
        first = True
        try:
            while True:
                room = min(topic.share - topic.held, MAX_NUM_REQUESTED)
                if room > 0 and (first or room >= max(1, topic.share // 2)):
                    await call.write(self._fetch(topic, room, first=first))
                    # Subscribed: an idle call answers nothing until its keepalive (270 s); a refusal
                    # ends it at once and clears this.
                    self._live(topic, True)
                    first = False
                topic.more.clear()
                await topic.more.wait()
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            return  # the call ended: the reader reports why

    async def _read(
        self,
        call: Any,
        stub: pb_grpc.PubSubStub,
        topic: TopicState,
        metadata: tuple[tuple[str, str], ...],
        queue: asyncio.Queue[_Delivered],
    ) -> None:
        while (response := await call.read()) is not grpc.aio.EOF:
            self._live(topic, True)
            # Counted here, not taken from pending_num_requested: a response the server wrote before it
            # read our latest FetchRequest would undercount, and the bound would be passed.
            topic.requested = max(0, topic.requested - len(response.events))
            for event in response.events:
                self.received += 1
                change = await self._events.decode(stub, topic.name, event, metadata)
                if change is None:
                    continue
                topic.buffered += 1
                await queue.put(_Delivered(topic, topic.generation, change, bytes(event.replay_id)))
            idle = topic.buffered == topic.in_hand == 0
            if not response.events and response.latest_replay_id and idle:
                topic.resume = bytes(response.latest_replay_id)  # a keepalive, nothing unprocessed
            topic.more.set()
        raise _Refused(grpc.StatusCode.UNAVAILABLE, "", "the server ended the stream")

    async def close(self) -> None:
        """Close the gRPC channel (idempotent)."""
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()
