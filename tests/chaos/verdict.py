"""How a chaos scenario is judged and reported: the verdict before any repair, and figures that are counted.

The verdict is the pipeline's own: wait until nothing is pending, ask the oracle
(`bridge.devtools.invariants`) and a DRY-RUN reconciliation, count lost and doubled bookings;
any of them non-zero fails the scenario.
Nothing repairs before that (a repairing run would hide what the pipeline lost).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.devtools.invariants import Tally
from bridge.devtools.stack import (
    DaemonProcess,
    EmulatorProcess,
    check_invariants,
    count_damage,
    ledger_activities,
    ledger_connection,
    wait_until,
)
from tests.e2e.conftest import Stack

TIME_FIELDS = ("StartDateTime", "EndDateTime")
FAULT_BUDGET = 1_000_000
AGREE_SECONDS = 30  # `times` on every fault rule, so that the rules list shows each rule's hits


class EditsNotRestored(AssertionError):
    """The only differences left are Events still at the time a person dragged them to: the stream missed
    those edits (reconciliation would repair them, which the verdict does not allow). Nothing else differs."""


def report(name: str, **figures: Any) -> None:
    """Append one scenario's figures to `$MOGLI_CHAOS_REPORT` (JSON lines) when it is set."""
    path = os.environ.get("MOGLI_CHAOS_REPORT")
    if path:
        with Path(path).open("a") as fh:
            fh.write(json.dumps({"scenario": name, **figures}) + "\n")


def verdict(
    stack: Stack, daemon: DaemonProcess, timeout: float = 240, dragged_to: str | None = None
) -> dict[str, int]:
    """Judge what the pipeline did, repairing nothing: every committed booking settled, the oracle finds no
    difference, a dry-run reconciliation (through the running daemon) finds no drift, nothing lost or doubled.
    Returns the counted figures; AssertionError with the evidence otherwise (`EditsNotRestored` when the only
    differences are Events still at `dragged_to`, the time people dragged them to)."""
    # Counted in the database, not by the writer: a commit cut by a server crash may or may not have landed.
    bookings = len(stack.scheduler.rows("bookings"))

    def settled() -> bool:
        acts = ledger_activities(stack.ledger_url)
        return len(acts) >= bookings and not any(a["state"] == "pending" for a in acts.values())

    def agree() -> bool:
        return settled() and check_invariants(stack.emulator, stack.scheduler, stack.ledger_url) == []

    agreed = True
    try:
        wait_until(settled, timeout=timeout, interval=1.0, what="every booking to settle")
        # Restores of people's last edits follow their change events by a few seconds.
        wait_until(agree, timeout=AGREE_SECONDS, interval=1.0, what="the scheduler, ledger and org to agree")
    except AssertionError:
        agreed = False
    time.sleep(2.0)  # change events of the last restores reach the daemon before the dry run reads the org
    diffs = check_invariants(stack.emulator, stack.scheduler, stack.ledger_url)
    dry = daemon.reconcile(dry_run=True)
    damage = count_damage(stack.emulator, stack.scheduler)
    repairs = daemon_repairs(stack.ledger_url, dragged_to)
    figures = {
        "bookings": bookings,
        "lost": damage.lost,
        "doubled": damage.doubled,
        "differences": len(diffs),
        "drift_found_by_dry_run": int(dry["total"]),
        "daemon_reconciliation_repairs": repairs.total,
        "daemon_repairs_raced_by_the_stream": repairs.raced,
        "daemon_repairs_of_peoples_edits": repairs.edits,
    }
    evidence = (
        f"{figures}; oracle: {diffs[:5]}; dry-run drift by kind {dry['counts']}, first items "
        f"{dry['items'][:5]}; daemon log {daemon.log_path}"
    )
    if diffs and damage == Tally(0, 0) and dragged_to is not None:
        unrestored = _only_unrestored_edits(diffs, dry["items"], dragged_to)
        if unrestored:
            raise EditsNotRestored(f"{unrestored} people's edits not restored: {evidence}")
    assert agreed and not diffs, f"the three sides did not agree: {evidence}"
    assert dry["dry_run"] is True and dry["state"] == "finished", f"the dry run did not finish: {dry}"
    assert figures["drift_found_by_dry_run"] == 0, f"the dry-run reconciliation found drift: {evidence}"
    assert damage.lost == 0 and damage.doubled == 0, f"lost or doubled bookings: {evidence}"
    # The daemon reconciles by itself (a quiet channel's gap, an exhausted allocation). A repair the stream
    # or a person explains is a race with live traffic; any other would have hidden what the pipeline lost.
    assert not repairs.unexplained, f"the daemon's reconciliations repaired {repairs.unexplained}: {evidence}"
    return figures


@dataclass
class DaemonRepairs:
    """What the daemon's own (non-dry-run) reconciliations repaired before the verdict, explained or not."""

    total: int = 0
    raced: int = 0  # a mirror behind the scheduler that the stream then caught up with by itself
    edits: int = 0  # an Event still where a person dragged it, restored by the run instead of the stream
    unexplained: dict[str, int] = field(default_factory=dict)


def daemon_repairs(ledger_url: str, dragged_to: str | None) -> DaemonRepairs:
    """Classify every repair of the daemon's reconciliations: a stale mirror counts as a race when the
    stream journaled a change of that row after the run started (the change was late, not lost); an Event
    field counts as a person's edit when it was found at `dragged_to`; everything else is unexplained."""
    import sqlalchemy as sa

    repairs_q = sa.text(
        "SELECT d.kind, d.booking_id, d.link_id, d.detail, r.started_at FROM drift d "
        "JOIN reconciliation_runs r ON r.id = d.run_id WHERE r.dry_run = :dry AND d.repaired = :repaired"
    )
    streamed_q = sa.text(
        "SELECT count(*) FROM journal WHERE entity_key = :key AND at >= :since "
        "AND action LIKE 'source.%' AND CAST(detail AS TEXT) NOT LIKE '%\"snapshot\": true%'"
    )
    found = DaemonRepairs()
    with ledger_connection(ledger_url) as conn:
        for kind, booking_id, link_id, detail, started in conn.execute(
            repairs_q, {"dry": False, "repaired": True}
        ).all():
            found.total += 1
            text = detail if isinstance(detail, str) else json.dumps(detail)
            key = booking_id or link_id
            stale = kind.startswith("ledger_") and kind.endswith("_stale") and key is not None
            if stale and conn.execute(streamed_q, {"key": key, "since": started}).scalar_one() > 0:
                found.raced += 1
                continue
            if kind == "field_mismatch" and dragged_to is not None and f'"found": "{dragged_to}' in text:
                found.edits += 1
                continue
            found.unexplained[kind] = found.unexplained.get(kind, 0) + 1
    return found


def _only_unrestored_edits(diffs: list[Any], drift: list[dict[str, Any]], dragged_to: str) -> int:
    """How many bookings differ only by an Event time still at `dragged_to`; 0 when anything else differs."""
    unrestored = {
        d.key for d in diffs if d.detail.split(":")[0] in TIME_FIELDS and f"found {dragged_to}" in d.detail
    }
    others = [d for d in diffs if d.key not in unrestored] + [
        i for i in drift if i.get("booking_id") not in unrestored
    ]
    return 0 if others else len(unrestored)


def install_faults(emulator: EmulatorProcess, faults: list[dict[str, Any]]) -> None:
    """Add each fault rule with a `times` budget it cannot use up, so `fault_hits` can count its hits."""
    for fault in faults:
        emulator.add_fault(**fault, times=FAULT_BUDGET)


def fault_hits(emulator: EmulatorProcess) -> dict[str, int]:
    """Hits per active fault rule (its budget minus the times it has left), keyed by what the rule does."""
    hits: dict[str, int] = {}
    for rule in emulator.faults():
        what = rule["action"] if rule["action"] == "drop" else rule["error_code"] or f"{rule['latency_ms']}ms"
        hits[f"{rule['path']} {what}"] = FAULT_BUDGET - int(rule["times"])
    return hits


def count_logged(daemon: DaemonProcess, event: str) -> int:
    """How many times the daemon's log (every run of it) has this event."""
    return sum(1 for line in daemon.log_lines() if line.get("event") == event)


def bridge_requests(emulator: EmulatorProcess) -> int:
    """The bridge's requests to the org so far: every counted REST call but a person's single-record edits
    (`PATCH /sobjects/...`), plus the requests a fault rule answered (no rule matches a person's route)."""
    stats = emulator.stats()
    by_route = stats["api_requests"]["by_route"]
    rest = sum(int(n) for route, n in by_route.items() if not route.startswith("PATCH /sobjects/"))
    return rest + int(stats["faults_fired"])


def rows_in_flight(ledger_url: str, bookings: int) -> int:
    """Rows the bridge still has to push: activities pending in the ledger, plus bookings (of `bookings`
    committed in the scheduler) not yet ingested."""
    acts = ledger_activities(ledger_url)
    return int(sum(a["state"] == "pending" for a in acts.values())) + max(0, bookings - len(acts))


@dataclass
class Kills:
    """Each kill -9 and whether it landed on a working daemon: active, calling Salesforce since its start, and
    with rows still to push (pending in the ledger, or committed and not yet ingested) when it died.

    `requests()` counts the bridge's requests to the org(s) so far; `in_flight()` the rows still to push. A
    kill waits (a bounded while) for rows in flight and strikes at once; the count after the kill decides
    whether it landed, since the daemon may push the last row between the look and the signal."""

    requests: Callable[[], int]
    in_flight: Callable[[], int]
    landed: int = 0
    missed: list[str] = field(default_factory=list)
    _requests_at_start: int = 0

    def started(self, daemon: DaemonProcess) -> None:
        """Wait until this run of the daemon is active and has sent Salesforce a request of its own."""
        daemon.wait_active()
        self._requests_at_start = self.requests()
        wait_until(lambda: self.requests() > self._requests_at_start, what="the daemon to call Salesforce")

    def kill(self, daemon: DaemonProcess, busy_within: float = 30.0) -> None:
        """SIGKILL the daemon as soon as it has rows in flight (at the latest after `busy_within` seconds),
        then read what it was doing at that moment (its ledger no longer moves)."""
        deadline = time.monotonic() + busy_within
        while self.in_flight() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        daemon.kill9()
        requests = self.requests() - self._requests_at_start
        in_flight = self.in_flight()
        if requests > 0 and in_flight > 0:
            self.landed += 1
        else:
            self.missed.append(f"{requests} requests since start, {in_flight} rows in flight")

    def more_needed(self, cycles: int) -> bool:
        """True until `cycles` kills have landed; fails once as many kills have missed (the daemon idle or
        starting each time: the scenario would not be testing what it claims)."""
        assert len(self.missed) < cycles, f"kills that found the daemon idle or starting: {self.missed}"
        return self.landed < cycles
