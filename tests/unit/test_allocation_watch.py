"""The delivered-event allocation watch: warning, exhaustion, and the reconciliation after the reset."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from bridge.errors import ConfigurationError, SalesforceUnavailable
from bridge.metrics import BridgeMetrics
from bridge.pipeline.allocation import REASON, AllocationSettings, AllocationWatch
from bridge.records.inbound import EventAllocation
from bridge.salesforce.allocation import decode_event_allocation, is_daily_limit_error

T0 = datetime(2030, 6, 12, 15, 0, tzinfo=UTC)


@dataclass
class FakeOrg:
    """Answers /limits from a list of readings (None: unreachable) and says whether CometD refuses."""

    readings: list[EventAllocation | None]
    allocation_exhausted: bool = False

    async def event_allocation(self) -> EventAllocation:
        """The next reading."""
        reading = self.readings.pop(0)
        if reading is None:
            raise SalesforceUnavailable("GET /limits: timeout")
        return reading


@dataclass
class Clock:
    """A clock moved by hand."""

    now: datetime = T0

    def __call__(self) -> datetime:
        """The current time."""
        return self.now


@dataclass
class Reconciles:
    """Records requested reconciliations."""

    calls: list[tuple[datetime, str]] = field(default_factory=list)

    async def __call__(self, since: datetime, reason: str) -> None:
        """Record one request."""
        self.calls.append((since, reason))


def _watch(org: FakeOrg, clock: Clock, reconcile: Reconciles, seen: list[EventAllocation]) -> AllocationWatch:
    return AllocationWatch(
        org,
        org,
        clock=clock,
        reconcile=reconcile,
        on_reading=seen.append,
        settings=AllocationSettings(60, 0.2),
    )


async def test_exhaustion_reconciles_the_blind_window_after_the_reset(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Remaining 0 makes the bridge say it is blind; the first reading after the reset reconciles from the
    last check that could still see (and only then)."""
    org = FakeOrg(
        [
            EventAllocation(10_000, 4_000),
            EventAllocation(10_000, 0),
            EventAllocation(10_000, 0),
            EventAllocation(10_000, 10_000),
        ]
    )
    clock, reconcile, seen = Clock(), Reconciles(), []
    watch = _watch(org, clock, reconcile, seen)
    await watch.check()
    clock.now = T0 + timedelta(minutes=5)
    await watch.check()
    assert watch.blind_since == T0 and watch.status.startswith("exhausted since")
    clock.now = T0 + timedelta(hours=3)
    await watch.check()
    assert reconcile.calls == []
    clock.now = T0 + timedelta(hours=24)
    await watch.check()
    assert reconcile.calls == [(T0, REASON)]
    assert watch.blind_since is None and watch.status == "ok: 10000 of 10000 left"
    assert [r.remaining for r in seen] == [4_000, 0, 0, 10_000]
    out = capsys.readouterr().out
    assert out.count("streaming.allocation_exhausted") == 1 and "streaming.allocation_restored" in out


async def test_the_streams_refusal_counts_as_exhaustion() -> None:
    """CometD's `403::Organization total events daily limit exceeded` makes the bridge blind even while
    /limits cannot be read; the reset is confirmed by a reading before reconciling."""
    org = FakeOrg([EventAllocation(10_000, 10), None, None, EventAllocation(10_000, 9_000)])
    clock, reconcile, seen = Clock(), Reconciles(), []
    watch = _watch(org, clock, reconcile, seen)
    await watch.check()
    org.allocation_exhausted = True
    assert watch.status.startswith(f"exhausted since {T0.isoformat()}")  # before the next check
    clock.now = T0 + timedelta(minutes=5)
    await watch.check()
    assert watch.blind_since == T0
    org.allocation_exhausted = False
    await watch.check()  # unreadable: not confirmed back
    assert reconcile.calls == []
    await watch.check()
    assert reconcile.calls == [(T0, REASON)]


async def test_a_refused_limits_call_does_not_stop_the_watch() -> None:
    """/limits refused (the integration user lacks View Setup) is logged and the watch carries on."""

    class Refusing:
        allocation_exhausted = False

        async def event_allocation(self) -> EventAllocation:
            raise ConfigurationError("INSUFFICIENT_ACCESS_OR_READONLY: no access", "salesforce.username")

    org = Refusing()
    watch = AllocationWatch(org, org, clock=Clock(), settings=AllocationSettings(60, 0.2))
    await watch.check()
    assert watch.latest is None and watch.blind_since is None and watch.status == "unknown: not read yet"


async def test_a_low_allocation_warns_once(capsys: pytest.CaptureFixture[str]) -> None:
    """Below the threshold (20 %) the bridge warns once, says so in its status, and warns again only after it
    recovered and fell again."""
    org = FakeOrg(
        [
            EventAllocation(1_000, 500),
            EventAllocation(1_000, 150),
            EventAllocation(1_000, 100),
            EventAllocation(1_000, 900),
            EventAllocation(1_000, 50),
        ]
    )
    watch = _watch(org, Clock(), Reconciles(), [])
    await watch.check()
    assert watch.status == "ok: 500 of 1000 left"
    await watch.check()
    await watch.check()
    assert watch.status == "low: 100 of 1000 left"
    await watch.check()
    await watch.check()
    assert capsys.readouterr().out.count("streaming.allocation_low") == 2


def test_limits_decoding_and_the_cometd_refusal() -> None:
    """`DailyDeliveredPlatformEvents` is read from /limits; CometD's refusal text is recognised."""
    body = {"DailyDeliveredPlatformEvents": {"Max": 10_000, "Remaining": 9_000}}
    assert decode_event_allocation(body) == EventAllocation(10_000, 9_000)
    assert decode_event_allocation(body).used == 1_000
    with pytest.raises(SalesforceUnavailable):
        decode_event_allocation({"DailyApiRequests": {"Max": 1, "Remaining": 1}})
    assert is_daily_limit_error("403::Organization total events daily limit exceeded")
    assert not is_daily_limit_error("403::Unknown client")


def test_the_allocation_is_exported_as_metrics() -> None:
    """The watch's readings become the delivered-events gauges of /metrics."""
    metrics = BridgeMetrics()
    metrics.observe_event_allocation(10_000, 400)
    text = metrics.render().decode()
    assert "mogli_bridge_salesforce_delivered_events_limit 10000.0" in text
    assert "mogli_bridge_salesforce_delivered_events_remaining 400.0" in text
