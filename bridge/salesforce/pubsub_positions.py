"""Where each Pub/Sub channel stands: replay ids carried as ints, positions restored from the ledger, and
the flow-control counts of a channel's current Subscribe call.

A Pub/Sub replay id is opaque bytes. It travels in `SalesforceChange.replay_id` (an int, as CometD's) and
in the ledger's checkpoint text as `PUBSUB_REPLAY_BASE + int(0x01 || bytes)`: reversible for any length
(the 0x01 keeps leading zero bytes) and above every CometD replay id (a signed 64-bit long), so a stored
id of one transport is never taken for the other's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from bridge.records.inbound import ReplayPosition, WindowLost

log = structlog.get_logger(__name__)

PUBSUB_REPLAY_BASE = 1 << 64


def replay_number(raw: bytes) -> int:
    """A Pub/Sub replay id as the int `SalesforceChange.replay_id` and the ledger carry."""
    return PUBSUB_REPLAY_BASE + int.from_bytes(b"\x01" + raw, "big")


def replay_bytes(number: int) -> bytes | None:
    """The Pub/Sub replay id of `replay_number`'s int; None for a CometD id or a -1 position."""
    if number <= PUBSUB_REPLAY_BASE:
        return None
    tagged = number - PUBSUB_REPLAY_BASE
    return tagged.to_bytes((tagged.bit_length() + 7) // 8, "big")[1:]


@dataclass(eq=False, slots=True)
class TopicState:
    """One channel's subscription: positions and flow-control counts of its current call."""

    name: str
    share: int  # its part of the flow-control bound
    committed: bytes | None = None  # last id whose effect the consumer committed
    resume: bytes | None = None  # a new call starts after this id (CUSTOM), or at LATEST when None
    resume_time: datetime | None = None  # the commit time of the change at `resume`, if known
    generation: int = 0  # bumped by each new call; items of an older call are dropped
    requested: int = 0  # asked for and not yet received (the server's pending_num_requested)
    buffered: int = 0  # received and not yet handed to the consumer
    in_hand: int = 0  # handed to the consumer, which has not come back yet (0 or 1)
    live: bool = False  # subscribed now (a heartbeat may say how far it has seen)
    more: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def held(self) -> int:
        """Events requested and not yet processed."""
        return self.requested + self.buffered + self.in_hand


def topics_from_positions(
    positions: Mapping[str, ReplayPosition], channels: Sequence[str], share: int
) -> tuple[dict[str, TopicState], list[WindowLost]]:
    """Topics set up from the ledger's positions; a CometD id (the other transport's) is a lost window."""
    topics, lost = {}, []
    for channel in channels:
        topic = TopicState(channel, share)
        position = positions.get(channel)
        if position is not None and (raw := replay_bytes(position.replay_id)) is not None:
            topic.committed = topic.resume = raw
            topic.resume_time = position.commit_time
        elif position is not None and position.replay_id >= 0:  # -1;<time>: see heartbeats.py
            log.warning("pubsub.replay_id_of_cometd", channel=channel)
            lost.append(WindowLost(channel, position.commit_time, reason="replay_id_of_other_transport"))
        topics[channel] = topic
    return topics, lost
