"""The emulator's CDC event bus: replay ids, channel routing, replay cursors, retention and gap events."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from bridge import sfid
from bridge.emulator.bus import ALL_CHANGE_EVENTS, SYSTEM_USER_ID, EventBus, InvalidReplayId
from bridge.emulator.contracts import ChangeEvent, StreamingSettings

EVENTS = "/data/EventChangeEvent"
MOGLI = "/data/Mogli_Event__ChangeEvent"
SETTINGS = StreamingSettings(retention_seconds=100.0)


class Clock:
    """A wall clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Listener:
    """Records what the bus tells its listeners."""

    published: list[frozenset[str]] = field(default_factory=list)
    resets: int = 0

    def events_published(self, channels: frozenset[str]) -> None:
        self.published.append(channels)

    def bus_reset(self) -> None:
        self.resets += 1


_transactions = itertools.count(1)


def event(
    entity: str = "Event",
    change_type: str = "CREATE",
    record_id: str = "00U000000000001AAA",
    *,
    transaction_key: str | None = None,
    fields: dict[str, object] | None = None,
    sequence_number: int = 1,
) -> ChangeEvent:
    """A minimal change event, alone in its transaction unless `transaction_key` is shared."""
    return ChangeEvent(
        entity=entity,
        change_type=change_type,
        record_ids=(record_id,),
        fields=fields or {},
        changed_fields=(),
        change_origin="",
        commit_user="005000000000001AAA",
        transaction_key=transaction_key or f"tx{next(_transactions)}",
        sequence_number=sequence_number,
        commit_timestamp_ms=1,
    )


@pytest.fixture
def clock() -> Clock:
    """The bus's wall clock."""
    return Clock()


@pytest.fixture
def bus(clock: Clock) -> EventBus:
    """A bus with a 100-second retention."""
    return EventBus(SETTINGS, wall_clock=clock)


def ids(bus: EventBus, channel: str, after: int = 0) -> list[int]:
    """Replay ids retained on a channel after a cursor."""
    log = bus.channel_log(channel)
    assert log is not None
    return [stored.replay_id for stored in log.after(after, 1_000_000)]


def test_replay_ids_grow_by_random_steps_of_one_to_seven(bus: EventBus) -> None:
    """Replay ids are strictly increasing, never jump more than 7, and are not contiguous."""
    bus.publish([event() for _ in range(500)])
    steps = [b - a for a, b in itertools.pairwise(ids(bus, EVENTS))]
    assert len(steps) == 499
    assert set(steps) <= set(range(1, 8))
    assert len(set(steps)) > 1


def test_each_event_lands_on_its_entity_channel_and_all_change_events_with_one_id(bus: EventBus) -> None:
    """An Event and a Mogli_Event__c change go to their own channels and to /data/ChangeEvents, same ids."""
    bus.publish([event("Event"), event("Mogli_Event__c")])
    [event_id] = ids(bus, EVENTS)
    [mogli_id] = ids(bus, MOGLI)
    assert ids(bus, ALL_CHANGE_EVENTS) == [event_id, mogli_id]
    assert bus.last_replay_id == mogli_id


def test_entities_without_cdc_are_dropped_silently(bus: EventBus) -> None:
    """Account is not enabled: nothing is stored, no listener is woken, no replay id is used."""
    listener = Listener()
    bus.add_listener(listener)
    bus.publish([event("Account")])
    assert ids(bus, ALL_CHANGE_EVENTS) == []
    assert bus.last_replay_id == 0
    assert listener.published == []
    assert bus.channel_log("/data/AccountChangeEvent") is None


def test_listeners_hear_which_channels_got_events(bus: EventBus) -> None:
    """One notification per transaction naming the entity channels and /data/ChangeEvents."""
    listener = Listener()
    bus.add_listener(listener)
    bus.publish([event("Event"), event("Event")])
    assert listener.published == [frozenset({EVENTS, ALL_CHANGE_EVENTS})]


def test_channel_names_cover_enabled_entities_and_all_change_events(bus: EventBus) -> None:
    """Subscribable channels: one per enabled entity (custom `__c` -> `__ChangeEvent`) plus the catch-all."""
    assert bus.channel_names() == {
        EVENTS,
        MOGLI,
        "/data/LeadChangeEvent",
        "/data/ContactChangeEvent",
        ALL_CHANGE_EVENTS,
    }


def test_resolve_replay_minus_one_and_minus_two(bus: EventBus) -> None:
    """-1 starts after the newest event; -2 starts before the oldest retained one."""
    bus.publish([event(), event()])
    assert bus.resolve_replay(EVENTS, -1) == bus.last_replay_id
    assert bus.resolve_replay(EVENTS, -2) == 0


def test_resolve_replay_n_accepts_only_ids_retained_on_that_channel(bus: EventBus) -> None:
    """N must be an id this channel carries: ids of other channels and made-up ids are invalid."""
    bus.publish([event("Event"), event("Mogli_Event__c")])
    [event_id] = ids(bus, EVENTS)
    [mogli_id] = ids(bus, MOGLI)
    assert bus.resolve_replay(EVENTS, event_id) == event_id
    assert bus.resolve_replay(ALL_CHANGE_EVENTS, mogli_id) == mogli_id
    for channel, bad in [(EVENTS, mogli_id), (EVENTS, mogli_id + 100), (EVENTS, 0), (MOGLI, -3)]:
        with pytest.raises(InvalidReplayId):
            bus.resolve_replay(channel, bad)


def test_events_after_a_cursor_are_strictly_after_and_limited(bus: EventBus) -> None:
    """after(N, limit) starts strictly after N and returns at most `limit` events."""
    bus.publish([event() for _ in range(10)])
    all_ids = ids(bus, EVENTS)
    log = bus.channel_log(EVENTS)
    assert log is not None
    assert [s.replay_id for s in log.after(all_ids[3], 2)] == all_ids[4:6]
    assert log.has_after(all_ids[8]) and not log.has_after(all_ids[9])


def test_purge_drops_events_older_than_retention(bus: EventBus, clock: Clock) -> None:
    """purge() drops what is older than retention_seconds and answers how many events went."""
    bus.publish([event(), event()])
    clock.now += 60
    bus.publish([event()])
    clock.now += 50
    assert bus.purge() == 2
    assert len(ids(bus, EVENTS)) == 1
    assert bus.purge(older_than_seconds=0) == 1
    assert ids(bus, ALL_CHANGE_EVENTS) == []


def test_purged_replay_id_becomes_invalid(bus: EventBus, clock: Clock) -> None:
    """After retention passes, resubscribing from a purged id raises InvalidReplayId."""
    bus.publish([event()])
    [old] = ids(bus, EVENTS)
    clock.now += SETTINGS.retention_seconds + 1
    with pytest.raises(InvalidReplayId):
        bus.resolve_replay(EVENTS, old)


def test_publish_purges_expired_events_on_the_way(bus: EventBus, clock: Clock) -> None:
    """Publishing after retention has passed drops the expired events without an explicit purge()."""
    bus.publish([event()])
    clock.now += SETTINGS.retention_seconds + 1
    bus.publish([event()])
    assert len(ids(bus, EVENTS)) == 1


def test_large_purges_compact_and_keep_lookups_right(bus: EventBus, clock: Clock) -> None:
    """Thousands of purged events are compacted away; replay lookups stay correct afterwards."""
    bus.publish([event() for _ in range(3000)])
    clock.now += 10
    bus.publish([event() for _ in range(500)])
    kept = ids(bus, EVENTS)[3000:]
    assert bus.purge(older_than_seconds=5) == 3000
    assert ids(bus, EVENTS) == kept
    assert bus.resolve_replay(EVENTS, kept[10]) == kept[10]
    assert ids(bus, EVENTS, after=kept[-2]) == kept[-1:]


def test_wall_clock_going_back_does_not_break_retention_order(bus: EventBus, clock: Clock) -> None:
    """An event stamped while the wall clock stepped back is treated as no older than the one before."""
    bus.publish([event()])
    clock.now -= 1000
    bus.publish([event()])
    assert bus.purge() == 0
    assert len(ids(bus, EVENTS)) == 2


def test_gap_event_is_header_only_with_sequence_one(bus: EventBus) -> None:
    """publish_gap makes a GAP_* event: given ids, no fields, sequence 1, a valid system commit user."""
    bus.publish_gap("Event", ["00U000000000001AAA", "00U000000000002AAA"], "GAP_DELETE")
    log = bus.channel_log(EVENTS)
    assert log is not None
    [stored] = log.after(0, 10)
    gap = stored.event
    assert (gap.change_type, gap.record_ids, dict(gap.fields)) == (
        "GAP_DELETE",
        ("00U000000000001AAA", "00U000000000002AAA"),
        {},
    )
    assert gap.sequence_number == 1 and gap.changed_fields == ()
    assert sfid.is_valid(SYSTEM_USER_ID) and gap.commit_user == SYSTEM_USER_ID


def test_overflow_event_drops_record_ids(bus: EventBus) -> None:
    """GAP_OVERFLOW carries only the entity name."""
    bus.publish_gap("Mogli_Event__c", ["a0X000000000001AAA"], "GAP_OVERFLOW")
    log = bus.channel_log(MOGLI)
    assert log is not None
    assert log.after(0, 1)[0].event.record_ids == ()


@pytest.mark.parametrize(
    ("entity", "change_type"), [("Event", "UPDATE"), ("Event", "GAP_NOPE"), ("Account", "GAP_UPDATE")]
)
def test_gap_injection_rejects_bad_types_and_disabled_entities(
    bus: EventBus, entity: str, change_type: str
) -> None:
    """Only GAP_* change types, and only for CDC-enabled entities, can be injected."""
    with pytest.raises(ValueError):
        bus.publish_gap(entity, ["00U000000000001AAA"], change_type)


def test_reset_forgets_events_but_replay_ids_keep_growing(bus: EventBus) -> None:
    """reset() empties every channel and tells listeners; the next id is still above every earlier one."""
    listener = Listener()
    bus.add_listener(listener)
    bus.publish([event()])
    before = bus.last_replay_id
    bus.reset()
    assert ids(bus, ALL_CHANGE_EVENTS) == [] and listener.resets == 1
    bus.publish([event()])
    assert ids(bus, EVENTS)[0] > before


def test_the_same_change_to_several_records_in_one_transaction_is_one_event(bus: EventBus) -> None:
    """CDC general considerations: the same change to several records of one object in one transaction may
    come as one event with several recordIds; the emulator merges them (sequence numbers renumbered)."""
    first, second = "00U000000000001AAA", "00U000000000002AAA"
    bus.publish(
        [
            event("Event", "DELETE", first, transaction_key="t1", sequence_number=1),
            event("Mogli_Event__c", "DELETE", "a0X000000000001AAA", transaction_key="t1", sequence_number=2),
            event("Event", "DELETE", second, transaction_key="t1", sequence_number=3),
        ]
    )
    log = bus.channel_log(ALL_CHANGE_EVENTS)
    assert log is not None
    stored = [s.event for s in log.after(0, 10)]
    assert [(e.entity, e.record_ids, e.sequence_number) for e in stored] == [
        ("Event", (first, second), 1),
        ("Mogli_Event__c", ("a0X000000000001AAA",), 2),
    ]


def test_different_changes_or_transactions_are_never_merged(bus: EventBus) -> None:
    """Only identical changes of one transaction merge: other values or another transaction stay apart."""
    bus.publish(
        [
            event("Event", "UPDATE", "00U000000000001AAA", transaction_key="t1", fields={"Subject": "A"}),
            event("Event", "UPDATE", "00U000000000002AAA", transaction_key="t1", fields={"Subject": "B"}),
        ]
    )
    bus.publish([event("Event", "DELETE", "00U000000000003AAA")])
    bus.publish([event("Event", "DELETE", "00U000000000004AAA")])
    assert len(ids(bus, EVENTS)) == 4


def test_merging_can_be_switched_off(clock: Clock) -> None:
    """With `merge_same_changes = false` every record's change is its own event."""
    bus = EventBus(StreamingSettings(retention_seconds=100.0, merge_same_changes=False), wall_clock=clock)
    bus.publish([event("Event", "DELETE", f"00U00000000000{n}AAA", transaction_key="t1") for n in range(3)])
    assert len(ids(bus, EVENTS)) == 3


def test_merging_renumbers_only_the_transactions_it_merged_in(bus: EventBus) -> None:
    """sequenceNumber runs 1..n within a transaction after a merge; other transactions keep their numbers."""
    bus.publish(
        [
            event("Event", "DELETE", "00U000000000001AAA", transaction_key="t1", sequence_number=1),
            event("Event", "DELETE", "00U000000000002AAA", transaction_key="t1", sequence_number=2),
            event("Lead", "CREATE", "00Q000000000001AAA", transaction_key="t1", sequence_number=3),
            event("Lead", "CREATE", "00Q000000000002AAA", transaction_key="t2", sequence_number=4),
        ]
    )
    log = bus.channel_log(ALL_CHANGE_EVENTS)
    assert log is not None
    stored = [(s.event.transaction_key, s.event.sequence_number) for s in log.after(0, 10)]
    assert stored == [("t1", 1), ("t1", 2), ("t2", 4)]
