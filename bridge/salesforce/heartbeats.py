"""How far each quiet channel has seen: the `Heartbeat`s and gap reports both event transports share.

A channel that has no replay id yet (a quiet filtered channel delivers nothing of the bridge's own) can only
be subscribed at "new events" (-1 / LATEST), which would skip everything between two subscriptions. While
such a channel is live, the stream reports every `heartbeat_seconds` how far it has seen (stored as its
position `-1;<time>`); the reported time lags the clock by as much, so that an event committed just before
is not counted as seen while still in flight. A later subscription of it reports `WindowLost` from that
time, and the consumer reconciles the window by change time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta

import structlog

from bridge.records.inbound import Heartbeat, ReplayPosition, WindowLost

log = structlog.get_logger(__name__)

# A channel's first report waits until it has stayed live this long (or an interval, if shorter): a channel
# the org does not have is refused within this time, and must not be reported as seen.
FIRST_SETTLE_SECONDS = 2.0


class Heartbeats:
    """The time up to which each channel without a replay id has seen everything, and when to say so."""

    def __init__(
        self,
        positions: Mapping[str, ReplayPosition],
        *,
        interval: float,
        clock: Callable[[], datetime],
        ticks: Callable[[], float] | None = None,
    ) -> None:
        # Channels stored as `-1;<time>`: seen until then, never an id.
        self._seen_until = {
            channel: p.commit_time for channel, p in positions.items() if p.replay_id < 0 and p.commit_time
        }
        self._interval = interval
        self._clock = clock
        self._ticks = ticks  # monotonic seconds; the running loop's clock when None
        self._last_beat = 0.0
        self._live_since: dict[str, float] = {}  # since when each quiet channel is live (monotonic seconds)

    def seen_until(self, channel: str) -> datetime | None:
        """The time up to which `channel` is known to have seen everything, if any."""
        return self._seen_until.get(channel)

    def due(self, quiet: Iterable[str]) -> list[Heartbeat]:
        """Every `interval` seconds: how far each of the `quiet` channels (live, no replay id) has seen. A
        channel never seen before is reported once it has been live for FIRST_SETTLE_SECONDS (or the interval
        if shorter; `first`), so that a daemon killed within its first interval still left the time from
        which the next one reconciles, and a channel refused at once is never reported."""
        now = self._ticks() if self._ticks is not None else asyncio.get_running_loop().time()
        settle = min(FIRST_SETTLE_SECONDS, self._interval)
        quiet = list(quiet)
        # Live without a break: a channel that dropped out (refused, or given an id) starts again.
        self._live_since = {c: self._live_since.get(c, now) for c in quiet}
        quiet = [c for c in quiet if c in self._seen_until or now - self._live_since[c] >= settle]
        if now - self._last_beat >= self._interval:
            self._last_beat = now
        else:
            quiet = [channel for channel in quiet if channel not in self._seen_until]
        seen = self._clock() - timedelta(seconds=self._interval)
        beats = []
        for channel in quiet:
            first = channel not in self._seen_until
            self._seen_until[channel] = max(seen, self._seen_until.get(channel, seen))
            beats.append(Heartbeat(channel, self._seen_until[channel], first=first))
        return beats

    def gap(self, channel: str) -> WindowLost | None:
        """`channel`, never given an id, is subscribed at new events again: the window since it was last
        seen may be lost (None when it was never seen)."""
        since = self._seen_until.get(channel)
        if since is None:
            return None
        log.warning("streaming.resubscribed_without_replay_id", channel=channel, since=since.isoformat())
        return WindowLost(channel, since, reason="resubscribed_without_replay_id")
