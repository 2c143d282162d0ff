"""Which channels of a change stream are subscribed right now, for the stream-subscribed gauge and health.

Both transports (`streaming.ChangeStream`, `pubsub.PubSubStream`) mark a channel subscribed when Salesforce
has taken the subscription and not subscribed when it is lost (a refused or cut call, a rebuilt client, a
channel fallen out of the CometD client's set, the stream closed). Observers hear each change once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

Observer = Callable[[str, bool], None]


class SubscribedChannels:
    """Subscribed or not, per channel; every channel starts not subscribed."""

    def __init__(self, channels: Iterable[str]) -> None:
        self._states = dict.fromkeys(channels, False)
        self._observers: list[Observer] = []

    @property
    def states(self) -> Mapping[str, bool]:
        """A read-only view: channel -> subscribed."""
        return MappingProxyType(self._states)

    @property
    def all_subscribed(self) -> bool:
        """Every watched channel is subscribed."""
        return all(self._states.values())

    def observe(self, observer: Observer) -> None:
        """Call `observer(channel, subscribed)` now for every channel, then on every change."""
        self._observers.append(observer)
        for channel, subscribed in self._states.items():
            observer(channel, subscribed)

    def mark(self, channel: str, subscribed: bool) -> None:
        """Record the channel's state; observers hear it only when it changed."""
        if channel not in self._states or self._states[channel] is subscribed:
            return
        self._states[channel] = subscribed
        for observer in self._observers:
            observer(channel, subscribed)

    def lose_all(self) -> None:
        """No channel is subscribed any more (the client or call is gone)."""
        for channel in self._states:
            self.mark(channel, False)
