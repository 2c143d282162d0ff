"""The emulator's Change Data Capture event bus: per-channel logs of change events with replay ids.

Every committed transaction arrives as a list of ChangeEvents. The same change to several records of one
object in one transaction becomes one event with several record ids (unless `merge_same_changes` is off).
The bus keeps each event (for entities whose Change Data Capture is enabled) in its entity channel, in
`/data/ChangeEvents` and in each custom channel whose member filter it passes (see channels.py), under one
replay id that grows by a random step of 1..7, so clients cannot do arithmetic on ids. Events older than the
retention window are dropped. Appends are O(1); finding "the events after replay id N" is a bisection.
"""

from __future__ import annotations

import bisect
import itertools
import json
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import structlog

from bridge.emulator.channels import ChannelRegistry
from bridge.emulator.contracts import ChangeEvent, StreamingSettings, change_event_channel

log = structlog.get_logger(__name__)

ALL_CHANGE_EVENTS = "/data/ChangeEvents"
GAP_CHANGE_TYPES = frozenset({"GAP_CREATE", "GAP_UPDATE", "GAP_DELETE", "GAP_UNDELETE", "GAP_OVERFLOW"})
# Gap events are made by the platform, not by a user; a fixed, well-formed User id stands in for it.
SYSTEM_USER_ID = "005000000000000AAA"
_MAX_REPLAY_STEP = 7
# Compact a channel's lists once this many purged entries sit in front of the live ones.
_COMPACT_AFTER = 1024


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A change event as the bus keeps it: with its replay id and when the bus received it."""

    replay_id: int
    published_at: float
    event: ChangeEvent


class BusListener(Protocol):
    """Told when events land on channels or the bus is emptied (the streaming service)."""

    def events_published(self, channels: frozenset[str]) -> None:
        """New events were appended to these channels."""

    def bus_reset(self) -> None:
        """The bus was emptied back to nothing."""


class InvalidReplayId(Exception):
    """A replay id that is not retained on the channel (purged, unknown, or from another channel)."""

    def __init__(self, channel: str, replay_id: int) -> None:
        super().__init__(f"replay id {replay_id} is not retained on {channel}")
        self.channel = channel
        self.replay_id = replay_id


class ChannelLog:
    """The retained events of one channel, ordered by replay id (and so by time)."""

    def __init__(self) -> None:
        self._ids: list[int] = []
        self._times: list[float] = []
        self._events: list[StoredEvent] = []
        self._start = 0  # entries before this index are purged and wait for compaction

    def __len__(self) -> int:
        return len(self._events) - self._start

    def append(self, stored: StoredEvent) -> None:
        """Add the newest event."""
        self._ids.append(stored.replay_id)
        self._times.append(stored.published_at)
        self._events.append(stored)

    def oldest_time(self) -> float | None:
        """When the oldest retained event arrived, or None when empty."""
        return self._times[self._start] if len(self) else None

    def contains(self, replay_id: int) -> bool:
        """True when an event with exactly this replay id is retained here."""
        index = bisect.bisect_left(self._ids, replay_id, lo=self._start)
        return index < len(self._ids) and self._ids[index] == replay_id

    def after(self, replay_id: int, limit: int) -> list[StoredEvent]:
        """Up to `limit` retained events with a replay id strictly greater than `replay_id`."""
        index = bisect.bisect_right(self._ids, replay_id, lo=self._start)
        return self._events[index : index + limit]

    def has_after(self, replay_id: int) -> bool:
        """True when some retained event has a replay id greater than `replay_id`."""
        return len(self) > 0 and self._ids[-1] > replay_id

    def purge_until(self, cutoff: float) -> int:
        """Drop events that arrived at or before `cutoff`; answers how many went."""
        index = bisect.bisect_right(self._times, cutoff, lo=self._start)
        removed = index - self._start
        self._start = index
        if self._start >= _COMPACT_AFTER and self._start * 2 >= len(self._events):
            del self._ids[: self._start], self._times[: self._start], self._events[: self._start]
            self._start = 0
        return removed


class EventBus:
    """Stores change events per channel with non-contiguous replay ids and wakes listeners."""

    def __init__(
        self,
        settings: StreamingSettings,
        wall_clock: Callable[[], float] = time.time,
        *,
        id_segment: str = "Em",
    ) -> None:
        self._settings = settings
        self._wall_clock = wall_clock
        self._random = random.Random()
        self._enabled = frozenset(settings.cdc_entities)
        self._channels = {change_event_channel(entity): entity for entity in settings.cdc_entities}
        self._logs: dict[str, ChannelLog] = {}
        self._listeners: list[BusListener] = []
        self.merge_same_changes = settings.merge_same_changes
        self.filter_deleted_values = settings.filter_deleted_values
        # Channel definitions are setup metadata, not data: reset() keeps them and empties their logs.
        self.channels = ChannelRegistry(id_segment)
        # Never reset, so cursors of live subscriptions stay meaningful across reset().
        self._last_replay_id = 0
        self._last_time = 0.0
        self._commit_number = 0
        self.reset()

    @property
    def last_replay_id(self) -> int:
        """The replay id of the newest event ever stored (0 before the first)."""
        return self._last_replay_id

    def channel_names(self) -> frozenset[str]:
        """Every channel a client may subscribe to."""
        return frozenset(self._logs)

    def channel_log(self, channel: str) -> ChannelLog | None:
        """The log of a subscribable channel, None for an unknown channel."""
        return self._logs.get(channel)

    def add_listener(self, listener: BusListener) -> None:
        """Register a listener for publications and resets."""
        self._listeners.append(listener)

    def sync_channels(self) -> None:
        """Give every custom channel of the registry a log, and drop the logs of deleted ones."""
        wanted = {channel.path for channel in self.channels.channels()}
        fixed = {*self._channels, ALL_CHANGE_EVENTS}
        for path in [p for p in self._logs if p not in fixed and p not in wanted]:
            del self._logs[path]
        for path in wanted - set(self._logs):
            self._logs[path] = ChannelLog()

    def publish(self, events: Sequence[ChangeEvent]) -> None:
        """Store one transaction's events (enabled entities only) and wake listeners."""
        now = self._now()
        self._purge_if_due(now)
        touched: set[str] = set()
        for event in merge_same_changes(events) if self.merge_same_changes else events:
            if event.entity not in self._enabled:
                continue
            stored = StoredEvent(replay_id=self._next_replay_id(), published_at=now, event=event)
            channel = change_event_channel(event.entity)
            self._logs[channel].append(stored)
            touched.add(channel)
            if not self.channels.filters_standard_channel(event.entity):
                self._logs[ALL_CHANGE_EVENTS].append(stored)
                touched.add(ALL_CHANGE_EVENTS)
            for path, delivered in self.channels.route(event, deleted_values=self.filter_deleted_values):
                self._logs[path].append(replace(stored, event=delivered))
                touched.add(path)
        if touched:
            self._notify(frozenset(touched))

    def publish_gap(self, entity: str, record_ids: Sequence[str], change_type: str) -> None:
        """Publish one gap (GAP_*) or overflow (GAP_OVERFLOW, no record ids) event for an enabled entity."""
        if change_type not in GAP_CHANGE_TYPES:
            raise ValueError(f"change_type must be one of {sorted(GAP_CHANGE_TYPES)}, not {change_type!r}")
        if entity not in self._enabled:
            raise ValueError(f"Change Data Capture is not enabled for {entity!r}")
        self._commit_number += 1
        ids = () if change_type == "GAP_OVERFLOW" else tuple(record_ids)
        gap = ChangeEvent(
            entity=entity,
            change_type=change_type,
            record_ids=ids,
            fields={},
            changed_fields=(),
            change_origin="",
            commit_user=SYSTEM_USER_ID,
            transaction_key=str(uuid.uuid4()),
            sequence_number=1,
            commit_timestamp_ms=int(self._wall_clock() * 1000),
            commit_number=self._commit_number,
        )
        self.publish([gap])
        log.info("emulator.bus.gap_published", entity=entity, change_type=change_type, records=len(ids))

    def purge(self, older_than_seconds: float | None = None) -> int:
        """Drop events older than the given age (default: the retention window); answers how many went."""
        age = self._settings.retention_seconds if older_than_seconds is None else older_than_seconds
        cutoff = self._now() - age
        removed = 0
        for channel, channel_log in self._logs.items():
            count = channel_log.purge_until(cutoff)
            if channel == ALL_CHANGE_EVENTS:
                removed = count
        if removed:
            log.info("emulator.bus.purged", events=removed)
        return removed

    def reset(self) -> None:
        """Forget every stored event; replay ids keep growing from where they were."""
        self._logs = {channel: ChannelLog() for channel in self._channels}
        self._logs[ALL_CHANGE_EVENTS] = ChannelLog()
        self.sync_channels()
        for listener in self._listeners:
            listener.bus_reset()

    def resolve_replay(self, channel: str, replay_id: int) -> int:
        """The cursor a subscription starts from: -1 new only, -2 all retained, N strictly after N."""
        channel_log = self._logs[channel]
        self._purge_if_due(self._now())
        if replay_id == -1:
            return self._last_replay_id
        if replay_id == -2:
            return 0
        if not channel_log.contains(replay_id):
            raise InvalidReplayId(channel, replay_id)
        return replay_id

    def _next_replay_id(self) -> int:
        self._last_replay_id += self._random.randint(1, _MAX_REPLAY_STEP)
        return self._last_replay_id

    def _now(self) -> float:
        # The lists are bisected by time, so time never goes backwards inside the bus.
        self._last_time = max(self._last_time, self._wall_clock())
        return self._last_time

    def _purge_if_due(self, now: float) -> None:
        oldest = self._logs[ALL_CHANGE_EVENTS].oldest_time()
        if oldest is not None and oldest < now - self._settings.retention_seconds:
            self.purge()

    def _notify(self, channels: frozenset[str]) -> None:
        for listener in self._listeners:
            listener.events_published(channels)


def merge_same_changes(events: Sequence[ChangeEvent]) -> list[ChangeEvent]:
    """One event per (transaction, entity, change type, body, changed fields), with every record id.

    Salesforce documents that the same change to several records of one object in one transaction may
    come as one event whose `recordIds` lists them all; the emulator always merges (the least convenient
    reading for a subscriber), then renumbers `sequenceNumber` 1..n within each transaction it merged in.
    Overflow events stay as they are.
    """
    out: list[ChangeEvent] = []
    position: dict[tuple[str, str, str, str, tuple[str, ...]], int] = {}
    merged: set[str] = set()
    for event in events:
        body = json.dumps(event.fields, sort_keys=True, default=str)
        key = (event.transaction_key, event.entity, event.change_type, body, event.changed_fields)
        index = position.get(key)
        if index is None or event.change_type == "GAP_OVERFLOW":
            position[key] = len(out)
            out.append(event)
            continue
        first = out[index]
        out[index] = replace(
            first,
            record_ids=first.record_ids + event.record_ids,
            record_values=first.record_values + event.record_values,
        )
        merged.add(event.transaction_key)
    numbers = {key: itertools.count(1) for key in merged}
    return [
        replace(event, sequence_number=next(numbers[event.transaction_key]))
        if event.transaction_key in numbers
        else event
        for event in out
    ]
