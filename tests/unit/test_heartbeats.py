"""The quiet-channel heartbeats both event transports share (bridge.salesforce.heartbeats)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bridge.records.inbound import Heartbeat, ReplayPosition, WindowLost
from bridge.salesforce.heartbeats import FIRST_SETTLE_SECONDS, Heartbeats

EVENTS, LEADS, MOGLI = "/data/EventChangeEvent", "/data/LeadChangeEvent", "/data/Mogli_Event__ChangeEvent"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
INTERVAL = 60.0


class _Clocks:
    """A wall clock and a monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = NOW
        self.ticks = 1000.0

    def wall(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.ticks

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.ticks += seconds


def _beats(clocks: _Clocks, positions: dict[str, ReplayPosition] | None = None) -> Heartbeats:
    return Heartbeats(positions or {}, interval=INTERVAL, clock=clocks.wall, ticks=clocks.monotonic)


def test_only_positions_without_a_replay_id_but_with_a_time_count_as_seen() -> None:
    """`-1;<time>` is a channel seen until then; a real replay id, or -1 without a time, is not."""
    since = NOW - timedelta(days=1)
    beats = _beats(
        _Clocks(),
        {EVENTS: ReplayPosition(-1, since), LEADS: ReplayPosition(42, since), MOGLI: ReplayPosition(-1)},
    )
    assert [beats.seen_until(c) for c in (EVENTS, LEADS, MOGLI)] == [since, None, None]


def test_quiet_channels_beat_once_per_interval_lagging_the_clock_by_it() -> None:
    """A heartbeat names only the quiet channels it is given, reports the clock minus the interval, and
    comes again only once the interval has passed on the monotonic clock."""
    clocks = _Clocks()
    beats = _beats(clocks)
    lag = timedelta(seconds=INTERVAL)
    assert beats.due([EVENTS, LEADS]) == []  # just live
    clocks.advance(INTERVAL)
    first = [Heartbeat(EVENTS, NOW, first=True), Heartbeat(LEADS, NOW, first=True)]
    assert beats.due([EVENTS, LEADS]) == first
    clocks.advance(INTERVAL - 1)
    assert beats.due([EVENTS, LEADS]) == []
    clocks.advance(1)
    assert beats.due([LEADS]) == [Heartbeat(LEADS, NOW + lag)]
    assert (beats.seen_until(EVENTS), beats.seen_until(LEADS)) == (NOW, NOW + lag)


def test_a_heartbeat_never_moves_a_channel_back_in_time() -> None:
    """A stored `seen until` later than the clock minus the interval is reported as it is, not lowered."""
    clocks = _Clocks()
    later = NOW + timedelta(minutes=5)
    beats = _beats(clocks, {EVENTS: ReplayPosition(-1, later)})
    assert beats.due([EVENTS]) == [Heartbeat(EVENTS, later)]
    assert beats.seen_until(EVENTS) == later


def test_between_two_heartbeats_only_a_channel_never_seen_is_reported_as_its_first() -> None:
    """Between two heartbeats no known channel's time moves; a channel live for the first time is reported
    once it has stayed live for FIRST_SETTLE_SECONDS (a daemon killed before the interval passed still
    leaves where the next one reconciles from)."""
    clocks = _Clocks()
    beats = _beats(clocks)
    lag = timedelta(seconds=INTERVAL)
    beats.due([EVENTS])
    clocks.advance(FIRST_SETTLE_SECONDS)
    assert beats.due([EVENTS]) == [Heartbeat(EVENTS, clocks.now - lag, first=True)]
    clocks.advance(1)
    assert beats.due([EVENTS, LEADS]) == []
    clocks.advance(FIRST_SETTLE_SECONDS)
    assert beats.due([EVENTS, LEADS]) == [Heartbeat(LEADS, clocks.now - lag, first=True)]
    assert beats.seen_until(EVENTS) == NOW + timedelta(seconds=FIRST_SETTLE_SECONDS) - lag


def test_a_channel_refused_before_it_settled_is_not_reported() -> None:
    """A channel the org does not have is live for a moment, then refused: it is never reported as seen, and
    when it is live again it must stay live for the whole settling time afresh."""
    clocks = _Clocks()
    beats = _beats(clocks)
    assert beats.due([EVENTS]) == []
    clocks.advance(FIRST_SETTLE_SECONDS / 2)
    assert beats.due([]) == []  # refused: no longer live
    clocks.advance(FIRST_SETTLE_SECONDS / 2)
    assert beats.due([EVENTS]) == []
    assert beats.seen_until(EVENTS) is None


def test_a_channel_stored_as_seen_is_not_reported_as_a_first() -> None:
    """A channel whose `-1;<time>` was stored by an earlier run waits for the interval like any other."""
    clocks = _Clocks()
    since = NOW - timedelta(hours=1)
    beats = _beats(clocks, {EVENTS: ReplayPosition(-1, since)})
    beats.due([LEADS])
    clocks.advance(1)
    assert beats.due([EVENTS]) == []
    assert beats.seen_until(EVENTS) == since


def test_a_gap_is_reported_from_the_last_time_seen_and_only_for_a_channel_seen_before() -> None:
    """A channel never seen has no gap; one stored as `-1;<time>` has a gap from that time, and after a
    heartbeat from the heartbeat's time."""
    clocks = _Clocks()
    since = NOW - timedelta(hours=3)
    beats = _beats(clocks, {EVENTS: ReplayPosition(-1, since)})
    assert beats.gap(LEADS) is None
    assert beats.gap(EVENTS) == WindowLost(EVENTS, since, reason="resubscribed_without_replay_id")
    beats.due([EVENTS])
    seen = NOW - timedelta(seconds=INTERVAL)
    assert beats.gap(EVENTS) == WindowLost(EVENTS, seen, reason="resubscribed_without_replay_id")
