"""Custom change-event channels and their members (PlatformEventChannel, PlatformEventChannelMember).

A custom channel `/data/Name__chn` carries the change events of its member entities that pass each member's
filter expression; a member of the standard `ChangeEvents` channel filters `/data/ChangeEvents` for its
entity. Entity fields named in a filter are enriched into the delivered event when not empty
(cdc-filters.html; EnrichedField: "added to an update or delete change event even when not changed"). Gap
and overflow events carry no record fields, so a condition on an entity field sees null for them; so does
a DELETE event unless the `filter_deleted_values` switch is on (see `deliver`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from bridge import sfid
from bridge.emulator.contracts import ChangeEvent
from bridge.emulator.filters import FilterExpression, parse_filter

STANDARD_CHANNEL = "ChangeEvents"
# The error code for a channel or member the org refuses [mem, an emulator assumption].
_INTEGRITY = "FIELD_INTEGRITY_EXCEPTION"
CHANNEL_PREFIX, MEMBER_PREFIX = "0YL", "0v8"
_CHANNEL_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|_(?!_))*[A-Za-z0-9]__chn$")


class ChannelError(Exception):
    """A channel or member the org refuses: `code` and `message` as Salesforce words them, `fields`."""

    def __init__(self, code: str, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.fields = code, message, fields


@dataclass(frozen=True, slots=True)
class CustomChannel:
    """A PlatformEventChannel of type `data`."""

    id: str
    full_name: str  # "Name__chn"
    label: str

    @property
    def path(self) -> str:
        """The CometD channel: `/data/Name__chn`."""
        return f"/data/{self.full_name}"


@dataclass(frozen=True, slots=True)
class ChannelMember:
    """A PlatformEventChannelMember: one entity's change events on a channel, optionally filtered."""

    id: str
    full_name: str
    channel: str  # the channel's full name, or "ChangeEvents"
    selected_entity: str  # "EventChangeEvent"
    entity: str  # "Event"
    filter: FilterExpression | None

    @property
    def filter_text(self) -> str | None:
        """The filter expression as written, None without one."""
        return self.filter.text if self.filter is not None else None


class ChannelRegistry:
    """The org's custom channels and channel members; routes each change event to the channels it reaches."""

    def __init__(self, id_segment: str = "Em") -> None:
        self._segment = id_segment  # the org's part of the ids it makes (see OrgConfig.id_segment)
        self._channels: dict[str, CustomChannel] = {}  # lower-case full name -> channel
        self._members: dict[str, ChannelMember] = {}  # id -> member
        self._ids = itertools.count(1)

    def channels(self) -> list[CustomChannel]:
        """Every custom channel, oldest first."""
        return list(self._channels.values())

    def members(self) -> list[ChannelMember]:
        """Every channel member, oldest first."""
        return list(self._members.values())

    def channel(self, full_name: str) -> CustomChannel | None:
        """The custom channel with this full name (case-insensitive), or None."""
        return self._channels.get(full_name.lower())

    def add_channel(self, full_name: str, label: str, channel_type: str) -> CustomChannel:
        """Create a `data` channel; ChannelError for a bad or duplicate name or another type."""
        if channel_type != "data":
            raise ChannelError(_INTEGRITY, "channelType: only data channels carry change events")
        if not _CHANNEL_NAME.match(full_name):
            raise ChannelError(
                _INTEGRITY,
                f"FullName: {full_name!r} is not a valid channel name (Name__chn)",
            )
        if full_name.lower() in self._channels:
            raise _duplicate()
        channel = CustomChannel(self._new_id(CHANNEL_PREFIX), full_name, label or full_name[:-5])
        self._channels[full_name.lower()] = channel
        return channel

    def add_member(
        self,
        full_name: str,
        channel_name: str,
        selected_entity: str,
        filter_text: str | None,
        *,
        entity_of: Callable[[str], str | None],
        resolve_field: Callable[[str, str], str | None],
    ) -> ChannelMember:
        """Add an entity to a channel; `entity_of` maps `EventChangeEvent` to `Event` (None: not enabled)."""
        channel = self.channel(channel_name)
        if channel is None and channel_name != STANDARD_CHANNEL:
            raise ChannelError(
                _INTEGRITY,
                f"eventChannel: no such channel {channel_name!r}",
                ("EventChannel",),
            )
        channel_name = channel.full_name if channel is not None else STANDARD_CHANNEL
        entity = entity_of(selected_entity)
        if entity is None:
            raise ChannelError(
                _INTEGRITY,
                f"selectedEntity: {selected_entity!r} is not a change event of an enabled entity",
                ("SelectedEntity",),
            )
        if any(m.full_name.lower() == full_name.lower() for m in self._members.values()):
            raise _duplicate()
        if any(
            m.channel.lower() == channel_name.lower() and m.entity == entity for m in self._members.values()
        ):
            raise _duplicate()
        parsed = _parsed(filter_text, lambda name: resolve_field(entity, name))
        member = ChannelMember(
            self._new_id(MEMBER_PREFIX), full_name, channel_name, selected_entity, entity, parsed
        )
        self._members[member.id] = member
        return member

    def set_filter(
        self, member_id: str, filter_text: str | None, resolve_field: Callable[[str, str], str | None]
    ) -> ChannelMember | None:
        """Replace a member's filter expression (None removes it); None when there is no such member."""
        member = self._members.get(member_id)
        if member is None:
            return None
        parsed = _parsed(filter_text, lambda name: resolve_field(member.entity, name))
        self._members[member_id] = replace(member, filter=parsed)
        return self._members[member_id]

    def remove(self, record_id: str) -> CustomChannel | ChannelMember | None:
        """Delete a channel (with its members) or a member by id; None when there is no such record."""
        member = self._members.pop(record_id, None)
        if member is not None:
            return member
        for key, channel in list(self._channels.items()):
            if channel.id == record_id:
                del self._channels[key]
                for gone in [m for m in self._members.values() if m.channel.lower() == key]:
                    del self._members[gone.id]
                return channel
        return None

    def filters_standard_channel(self, entity: str) -> bool:
        """True when a member of `ChangeEvents` for `entity` decides what `/data/ChangeEvents` carries."""
        return any(m.channel == STANDARD_CHANNEL and m.entity == entity for m in self._members.values())

    def route(self, event: ChangeEvent, *, deleted_values: bool) -> Iterator[tuple[str, ChangeEvent]]:
        """Each filtered channel (`/data/...`) the event reaches, with the event as delivered there."""
        for member in self._members.values():
            if member.entity == event.entity:
                delivered = deliver(event, member.filter, deleted_values=deleted_values)
                if delivered is not None:
                    yield f"/data/{member.channel}", delivered

    def _new_id(self, prefix: str) -> str:
        return sfid.to18(f"{prefix}{self._segment}{next(self._ids):0{12 - len(self._segment)}d}")


def deliver(
    event: ChangeEvent, expression: FilterExpression | None, *, deleted_values: bool = False
) -> ChangeEvent | None:
    """The event as a filtered member delivers it (enriched), or None when the filter drops it.

    Assumptions where Salesforce's documentation is silent, each the least convenient reading: a DELETE
    event, whose CometD body has no fields, offers a filter no entity field values (all null) unless
    `deleted_values`, though its enriched fields are still added when it passes (EnrichedField: "added to
    an update or delete change event"); an event for several records passes when the filter passes for one
    of them, keeps every record id, and is enriched only with values that all its records share.
    """
    if expression is None:
        return event
    header = event.scalar_header()
    snapshots = event.record_values or ({},) * max(len(event.record_ids), 1)
    seen = snapshots if deleted_values or event.change_type != "DELETE" else ({},) * len(snapshots)
    if not any(expression.matches(header, values) for values in seen):
        return None
    enriched = _shared_values(snapshots, expression.entity_fields)
    if not enriched:
        return event
    return replace(event, fields={**event.fields, **enriched})


def _shared_values(snapshots: tuple[Mapping[str, Any], ...], names: tuple[str, ...]) -> dict[str, Any]:
    shared: dict[str, Any] = {}
    for name in names:
        values = [snapshot.get(name) for snapshot in snapshots]
        if values[0] is not None and all(value == values[0] for value in values):
            shared[name] = values[0]
    return shared


def _parsed(filter_text: str | None, resolve_field: Callable[[str], str | None]) -> FilterExpression | None:
    if not filter_text:
        return None
    try:
        return parse_filter(filter_text, resolve_field)
    except ValueError as exc:
        raise ChannelError(_INTEGRITY, f"filterExpression: {exc}", ("FilterExpression",)) from exc


def _duplicate() -> ChannelError:
    # DUPLICATE_DEVELOPER_NAME is a documented StatusCode, and what public clients of a real org recover
    # from when a PlatformEventChannel create repeats (amp-labs/connectors #3327) [obs]; the message is ours.
    return ChannelError("DUPLICATE_DEVELOPER_NAME", "DeveloperName: this name is already used in the org")
