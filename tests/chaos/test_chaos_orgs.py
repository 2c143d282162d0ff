"""The chaos suite with many orgs: twenty customer orgs and the default org served by one daemon, traffic in
all of them, faults in some of them only, kill -9 at random moments and restarts; judged before any repair.

`make test` runs the short version (5 kill cycles, 600 operations, CometD); `make chaos` the long one
(`MOGLI_CHAOS=long`: 20 cycles, 3,000 operations, CometD and Pub/Sub). The verdict is the cross-org one of
bridge/devtools/tenants.py (nothing lost, doubled, wrong, in another org or orphaned, in any org) plus the
ledger's agreement with each org; a dry-run reconciliation reports after it. Figures go to
`$MOGLI_CHAOS_REPORT` (JSON lines) when set.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.devtools.stack import wait_until
from bridge.records.ledger import DEFAULT_ORG
from tests.e2e.tenancy_support import TenancyStack, assert_tenancy_logs_clean, org_rows

from .conftest import KILL_CYCLES, LONG, OPERATIONS
from .orgs_verdict import daemon_repairs_in_orgs, dry_run_every_org, orgs_verdict
from .orgs_world import (
    Lane,
    OrgSaboteur,
    OrgTraffic,
    chaos_orgs_stack,
    clear_org_faults,
    customer_lane,
    default_lane,
    install_org_faults,
    org_fault_hits,
    org_kills,
)
from .verdict import count_logged, report

# Faults per org, by index into the world's customer orgs; the others (and the default org) are left alone.
REST_FAULTS = [  # matched in order: the rarer first, so that each one's chance is about its probability
    {"path": "/composite/sobjects", "latency_ms": 8000, "probability": 0.08},
    {"path": "/composite/sobjects", "action": "drop", "probability": 0.08},
    {"path": "/composite/sobjects", "status": 400, "error_code": "UNABLE_TO_LOCK_ROW", "probability": 0.08},
    {"path": "/composite/sobjects", "status": 503, "error_code": "SERVER_UNAVAILABLE", "probability": 0.15},
]
STREAM_FAULTS = {"cometd": [{"path": "/cometd", "action": "drop", "probability": 0.05}], "pubsub": []}
FAULTED = (0, 1)  # REST (and CometD) fault rules on these orgs' URLs
# CometD: the org forgets its clients (403::Unknown client); Pub/Sub: it cuts every open stream.
STREAM_ACT = {"cometd": "clients_forgotten", "pubsub": "streams_cut"}
SESSIONS_AND_STREAMS, SPENT, DEACTIVATED = (2, 3), (4,), (5,)  # the saboteur's orgs, by act
# `make test` runs CometD; `make chaos` both change-event transports.
TRANSPORTS = ("cometd", "pubsub") if LONG else ("cometd",)
KILL_PACE = 0.05  # seconds between scheduler operations (the traffic goes on until the last kill)


@pytest.fixture(params=TRANSPORTS)
def orgs_transport(request: pytest.FixtureRequest) -> str:
    """The change-event transport the daemon uses for every org (`sync.transport`)."""
    return str(request.param)


@pytest.fixture
def orgs_stack(
    tmp_path: Path, scheduler_dsn: str, orgs_transport: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TenancyStack]:
    """Twenty connected customer orgs and the default org, in an emulator with 2-second long polls; on
    `pubsub` the emulator serves every org's Pub/Sub API and the daemon takes change events from there."""
    with chaos_orgs_stack(tmp_path, scheduler_dsn, pubsub=orgs_transport == "pubsub") as built:
        if orgs_transport == "pubsub":
            for name, value in built.world.emulator.pubsub_env().items():
                monkeypatch.setenv(name, value)
        yield built


@pytest.mark.timeout(900)
def test_kill_minus_nine_cycles_across_twenty_orgs_with_faults_in_some(
    orgs_stack: TenancyStack, orgs_transport: str
) -> None:
    """SIGKILL at random moments of a daemon serving twenty orgs and the default org while two orgs answer
    5xx, lock errors, dropped and slow requests, two have their sessions expired and their CometD clients
    forgotten (or Pub/Sub streams cut), one runs out of API calls and one has its integration user
    deactivated and reactivated: every kill lands on a working daemon, every fault and act hits, no org that
    nothing broke is paused, and before any repair no org has a lost, doubled, wrong, cross-org or orphaned
    record and the ledger agrees with every org; then a dry run of every org finds no drift."""
    stack, rng = orgs_stack, random.Random(20261204)
    world = stack.world
    lanes = [default_lane(world)] + [customer_lane(world, org) for org in world.orgs]
    daemon = stack.daemon()
    for index in FAULTED:
        install_org_faults(world.orgs[index], REST_FAULTS + STREAM_FAULTS[orgs_transport])
    acts = {
        "sessions_expired": SESSIONS_AND_STREAMS,
        STREAM_ACT[orgs_transport]: SESSIONS_AND_STREAMS,
        "allocation_exhausted": SPENT,
        "user_deactivated": DEACTIVATED,
    }
    targets = {act: [world.orgs[i] for i in indices] for act, indices in acts.items()}
    kills_done = threading.Event()
    traffic = OrgTraffic(stack.dsn, lanes, OPERATIONS, 7, pace=KILL_PACE, until=kills_done)
    saboteur = OrgSaboteur(stack, targets, 11)
    kills = org_kills(stack)
    daemon.start()
    traffic.start()
    saboteur.start()
    try:
        while kills.more_needed(KILL_CYCLES):
            kills.started(daemon)
            time.sleep(rng.uniform(1.0, 4.0))
            kills.kill(daemon)
            daemon.start()
        hits = _until_everything_hit(stack, saboteur, lanes)
    finally:
        kills_done.set()
        traffic.join()
        saboteur.stop.set()
        saboteur.join()
    for index in FAULTED:
        clear_org_faults(world.orgs[index])
    assert traffic.error is None, traffic.error
    assert saboteur.error is None, saboteur.error
    figures: dict[str, Any] = {
        "orgs": len(world.orgs) + 1,
        "kills_landed": kills.landed,
        "kills_missed": len(kills.missed),
        "operations": dict(traffic.done),
        "fault_hits": hits,
        **saboteur.hits,
    }
    figures.update(orgs_verdict(stack))
    paused = {e["org"] for e in daemon.log_lines() if e.get("event") == "org.paused"}
    broken = {world.orgs[i].org_id for i in (*FAULTED, *SESSIONS_AND_STREAMS, *SPENT, *DEACTIVATED)}
    figures["orgs_paused"] = len(paused)
    assert paused <= broken, f"orgs paused that nothing broke: {paused - broken}"
    # After the verdict: a dry run of every org through the daemon reports what a reconciliation would find.
    # An org the saboteur paused (its allocation used up a moment ago) has no runtime to run one until the
    # daemon has seen its cause gone and resumed it.
    daemon.wait_started()
    wait_until(
        lambda: not [o for o, row in org_rows(stack.ledger_url).items() if row["state"] == "paused"],
        timeout=120,
        what="every paused org resumed once its cause was gone",
    )
    dry = dry_run_every_org(daemon, [DEFAULT_ORG, *(org.org_id for org in world.orgs)])
    repairs = daemon_repairs_in_orgs(stack.ledger_url)
    assert daemon.terminate() == 0
    assert_tenancy_logs_clean(daemon, world)
    report(
        f"kill_9_across_20_orgs_with_faults_in_some_{orgs_transport}",
        **figures,
        drift_found_by_dry_run=dry.drift,
        dry_runs={"orgs": dry.runs, "bookings checked": dry.bookings_checked},
        daemon_reconciliation_repairs=repairs.total,
        daemon_repairs_raced_by_the_stream=repairs.raced,
        daemon_reconciliations=count_logged(daemon, "inbound.reconciled"),
    )
    assert dry.runs == len(world.orgs) + 1, f"dry runs for {len(world.orgs) + 1} orgs: {dry.runs}"
    assert dry.drift == 0, f"the dry runs found drift the verdict did not: {dry.by_kind}"
    assert not repairs.unexplained, f"the daemon's reconciliations repaired {repairs.unexplained}"


def _until_everything_hit(
    stack: TenancyStack, saboteur: OrgSaboteur, lanes: list[Lane], timeout: float = 240
) -> dict[str, int]:
    """With traffic and sabotage going on and the daemon running, wait until each fault rule of the faulted
    orgs has fired and each act of sabotage has hit at least once (one more booking in each faulted org
    every half second gives the rules calls to fire on); returns the hits per rule, or fails naming the
    rules and acts that never hit."""
    world = stack.world
    faulted = [world.orgs[i] for i in FAULTED]
    first_link = {lane.org: lane.links[0][0] for lane in lanes}

    def rule_hits() -> dict[str, int]:
        return {k: v for org in faulted for k, v in org_fault_hits(org).items()}

    def everything() -> bool:
        stack.assert_running()
        assert saboteur.error is None, saboteur.error
        hits = rule_hits()
        if all(hits.values()) and all(saboteur.hits.values()):
            return True
        for org in faulted:
            world.book(org, first_link[org.org_id])
            if hits.get(f"{org.name} /cometd drop") == 0:
                # The filtered channel never delivers the bridge's own writes, so a quiet org's long poll
                # lasts its full 110 s: a person's new Lead ends it, and the next connect may meet the rule.
                org.client.create("Lead", {"LastName": "Nudge", "Company": "Chaos"})
        return False

    try:
        wait_until(everything, timeout=timeout, interval=0.5, what="every fault and act to hit")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: fault rules {rule_hits()}, acts {saboteur.hits}") from None
    return rule_hits()
