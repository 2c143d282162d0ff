"""The emulator's per-application state, shared by the HTTP layers through one aiohttp AppKey."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from aiohttp import web

from bridge.emulator.bus import EventBus
from bridge.emulator.faults import FaultInjector
from bridge.emulator.limits import ApiUsage
from bridge.emulator.oauth import ClientPolicy, TokenStore
from bridge.emulator.org import OrgConfig
from bridge.emulator.query import QueryCursors
from bridge.emulator.requests_log import RequestLog
from bridge.emulator.store import OrgStore
from bridge.emulator.streaming import StreamingService


@dataclass(slots=True)
class EmulatorState:
    """Everything the route handlers of one emulator share."""

    org: OrgConfig
    store: OrgStore
    bus: EventBus
    streaming: StreamingService
    tokens: TokenStore
    usage: ApiUsage
    faults: FaultInjector
    cursors: QueryCursors
    client_policy: ClientPolicy
    clock: Callable[[], datetime]
    latency_ms: int = 0
    requests: RequestLog = field(default_factory=RequestLog)

    def latest_version(self) -> str:
        """The newest API version the org speaks."""
        return self.org.api_versions[-1]


STATE = web.AppKey("emulator_state", EmulatorState)
