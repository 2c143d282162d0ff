"""The daemon's health verdict: ready, degraded or not ready, with the reasons (pure: no clock, no I/O).

Not ready means the daemon cannot do its work: a supervised component is not running, the replication stream
is cut, or the scheduling database or the ledger does not answer. Degraded means it works but something needs
an operator's eye: Salesforce failing or rate-limited (the ping, or the pusher waiting), the API budget or the
delivered-event allocation nearly gone, work piling up, a change stream not subscribed, a gap reconciliation
paused. `/readyz` answers 200 for ready and degraded, 503 for not ready.

Reasons name states, codes and counts only, never record data: they are shown on the public page and /readyz.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bridge.metrics import Readings

State = Literal["ready", "degraded", "not_ready"]
# Who reads the change stream: this process (the one daemon, or the worker holding the reader lock), another
# worker (this one serves its orgs without reading: its own stream is rightly not connected), or no live
# worker at all (between a reader's death and the next one's election, or something is wrong).
StreamReader = Literal["this", "another", "nobody"]

# The daemon's own dependencies: without them it cannot work. Salesforce is not among them: while it is away
# changes are still read and recorded, and pushed once it is back.
ESSENTIAL_CHECKS = frozenset({"scheduler", "ledger"})
PUSHER_WAITING = {
    "salesforce_unavailable": "the pusher waits after Salesforce failed a write (5xx answer or timeout)",
    "api_limit": "the pusher waits: the Salesforce API budget is used up to its reserve",
    "ledger_unavailable": "the pusher waits for the ledger to answer again",
}
SALESFORCE_WAITS = frozenset(
    {"salesforce_unavailable", "api_limit"}
)  # the probe's Salesforce check shows these


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Where a reading turns the daemon degraded."""

    pending: int = 1000  # changes waiting in the ledger
    api_remaining_fraction: float = 0.2  # share of the daily API allocation left


@dataclass(frozen=True, slots=True)
class Health:
    """The verdict and why (reasons empty only when ready)."""

    state: State
    reasons: tuple[str, ...]

    @property
    def serving(self) -> bool:
        """The daemon works (ready or degraded): /readyz answers 200."""
        return self.state != "not_ready"

    def as_json(self) -> dict[str, object]:
        """The `health` object of /api/status and /readyz."""
        return {"state": self.state, "reasons": list(self.reasons)}


def assess(
    readings: Readings, thresholds: Thresholds = Thresholds(), reader: StreamReader = "this"
) -> Health:
    """Ready, degraded or not ready, with every reason found; `reader` says who should read the change
    stream (a worker that does not read it is not held to a connected stream)."""
    blocking = _blocking(readings, reader)
    if blocking:
        return Health("not_ready", tuple(blocking))
    warnings = _warnings(readings, thresholds)
    if reader == "nobody":
        warnings.insert(0, "no live worker reads the change stream (a reader is elected within seconds)")
    return Health("degraded", tuple(warnings)) if warnings else Health("ready", ())


def _blocking(readings: Readings, reader: StreamReader = "this") -> list[str]:
    reasons = [
        f"component {name} is {state}"
        for name, state in sorted(readings.components.items())
        if state != "running"
    ]
    if not readings.components:
        reasons.append("no component has started")
    if reader == "this" and not readings.replication.connected:
        reasons.append("the replication stream from the scheduling database is not connected")
    for check in readings.checks:
        if check.name in ESSENTIAL_CHECKS and not check.ok:
            reasons.append(f"{check.name} does not answer: {check.error or 'no reason given'}")
    return reasons


def _warnings(readings: Readings, thresholds: Thresholds) -> list[str]:
    reasons: list[str] = []
    for check in readings.checks:
        if check.name not in ESSENTIAL_CHECKS and not check.ok:
            reasons.append(f"{check.name} is failing: {check.error or 'no reason given'}")
    waiting = readings.waiting_reason
    shown = waiting in SALESFORCE_WAITS and any(c.name == "salesforce" and not c.ok for c in readings.checks)
    if waiting and not shown:
        reasons.append(PUSHER_WAITING.get(waiting, f"the pusher waits: {waiting}"))
    budget = _api_budget(readings, thresholds)
    if budget:
        reasons.append(budget)
    pending = readings.count("pending")
    if pending >= thresholds.pending:
        reasons.append(f"{pending} changes waiting to be pushed (threshold {thresholds.pending})")
    if readings.stream_subscribed is False:
        reasons.append("the Salesforce change stream is not subscribed")
    reasons.extend(_streaming(readings))
    return reasons


def _api_budget(readings: Readings, thresholds: Thresholds) -> str | None:
    used, limit = readings.api_used, readings.api_limit
    if used is None or not limit:
        return None
    left = max(limit - used, 0)
    if left >= limit * thresholds.api_remaining_fraction:
        return None
    return f"Salesforce API budget nearly gone: {left} of {limit} calls left today"


def _streaming(readings: Readings) -> list[str]:
    """The stream's status lines that call for attention (allocation low or used up, a paused gap run)."""
    reasons = []
    events = readings.streaming.get("delivered_events", "")
    if events.startswith(("low", "exhausted")):
        reasons.append(f"delivered-event allocation {events}")
    gaps = readings.streaming.get("gap_reconciliation", "")
    if " paused" in gaps:
        reasons.append(f"gap reconciliation {gaps}")
    return reasons
