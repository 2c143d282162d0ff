"""The demo's org figures and its pause snapshot (bridge/devtools/demo_orgs.py), from hand-built rows and
records: the figures count what each org holds and judge it with the cross-org verdict; the snapshot is taken
only when the paused org waits while every other org has gone on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.devtools.demo_orgs import OrgFigures, judge, snapshot
from bridge.devtools.tenants import OrgRecords
from bridge.records.ledger import DEFAULT_ORG

START = datetime(2030, 5, 1, 9, 0, tzinfo=UTC)
ORGS = ("org-a", "org-b", DEFAULT_ORG)
NAMES = {"org-a": "Acme", "org-b": "Globex", DEFAULT_ORG: "default org"}


def _sfid(prefix: str, org: str, n: int) -> str:
    """An 18-character id of `prefix`, distinct per org and number."""
    return f"{prefix}{org[-1].upper()}{n:011d}AAA"


class World:
    """Per org: one owner, one 1:1 link, two bookings (one cancelled in the default org), the records a
    correct bridge writes and the ledger rows it keeps."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.links: dict[str, dict[str, Any]] = {}
        self.bookings: list[dict[str, Any]] = []
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.moglis: dict[str, list[dict[str, Any]]] = {}
        self.acts: dict[str, dict[str, Any]] = {}
        for org in ORGS:
            self._add(org)

    def _add(self, org: str) -> None:
        owner, link = f"user-{org}", f"link-{org}"
        sf_user = _sfid("005", org, 1)
        self.users[owner] = {
            "id": owner,
            "salesforce_user_id": sf_user,
            "organization_id": None if org == DEFAULT_ORG else org,
        }
        self.links[link] = {
            "id": link,
            "link_type": "one_on_one",
            "owner_id": owner,
            "title": f"Call {org}",
            "description": "Agenda",
        }
        mogli = {"Id": _sfid("a0X", org, 1), "Scheduling_Link_Id__c": link}
        self.moglis[org], self.events[org] = [mogli], []
        for n in range(2):
            bid, start = f"booking-{org}-{n}", START + timedelta(hours=n)
            cancelled = org == DEFAULT_ORG and n == 1
            self.bookings.append(
                {
                    "id": bid,
                    "link_id": link,
                    "assigned_user_id": None,
                    "start_at": start,
                    "end_at": start + timedelta(minutes=30),
                    "status": "cancelled" if cancelled else "scheduled",
                    "related_record_id": _sfid("003", org, 1),
                }
            )
            event_id = _sfid("00U", org, n)
            self.acts[bid] = {"state": "cancelled" if cancelled else "synced", "activity_id": event_id}
            if cancelled:
                continue  # on_cancel = delete: no live Event
            self.events[org].append(
                {
                    "Id": event_id,
                    "Scheduling_Booking_Id__c": bid,
                    "OwnerId": sf_user,
                    "WhoId": _sfid("003", org, 1),
                    "WhatId": mogli["Id"],
                    "Subject": f"Call {org}",
                    "Description": "Agenda",
                    "StartDateTime": start.isoformat(),
                    "EndDateTime": (start + timedelta(minutes=30)).isoformat(),
                }
            )

    def judge(self) -> dict[str, OrgFigures]:
        """The demo's figures of every org, by org id."""
        held = [OrgRecords(org, self.events[org], self.moglis[org]) for org in ORGS]
        rows = judge(
            bookings=self.bookings,
            links=self.links,
            users=self.users,
            held=held,
            org_states=dict.fromkeys(ORGS, "active"),
            acts=self.acts,
            names=NAMES,
        )
        return {r.org: r for r in rows}


def test_a_correct_world_counts_each_orgs_records_and_reads_clean() -> None:
    """Each org's row counts its own bookings, cancellations, Events and Mogli Events; every count adds up
    (bookings = Events + cancelled), the ledger agrees and the verdict reads 'clean'."""
    figures = World().judge()
    assert [f.name for f in figures.values()] == ["Acme", "Globex", "default org"]
    for org, f in figures.items():
        assert (f.bookings, f.events, f.mogli_events) == (2, 2 - f.cancelled, 1), org
        assert f.ledger_differences == 0 and f.verdict_text == "clean" and f.state == "active", org
    assert figures[DEFAULT_ORG].cancelled == 1 and figures["org-a"].cancelled == 0


def test_an_event_written_to_another_org_is_lost_in_its_own_and_cross_org_in_the_other() -> None:
    """One of org A's Events held by org B instead: A's row reads one lost, B's one cross-org, and neither
    reads clean; the default org stays clean."""
    world = World()
    moved = world.events["org-a"].pop()
    world.events["org-b"].append(moved)
    figures = world.judge()
    assert figures["org-a"].judged.lost == 1 and figures["org-a"].verdict_text.startswith("lost 1,")
    assert figures["org-b"].judged.cross_org == 1 and figures["org-b"].verdict_text.endswith("cross-org 1")
    assert figures["org-b"].events == 3, "the Events column counts what the org holds, misplaced included"
    assert figures[DEFAULT_ORG].verdict_text == "clean"


def test_a_doubled_event_and_a_ledger_row_left_pending_are_reported() -> None:
    """A second Event for one booking reads doubled; a ledger row still pending beside its Event counts as a
    ledger difference while the verdict (which judges Salesforce) stays clean."""
    world = World()
    world.events["org-a"].append(dict(world.events["org-a"][0], Id=_sfid("00U", "org-a", 9)))
    world.acts["booking-org-b-0"]["state"] = "pending"
    figures = world.judge()
    assert figures["org-a"].judged.doubled == 1 and "doubled 1" in figures["org-a"].verdict_text
    assert figures["org-b"].ledger_differences == 1 and figures["org-b"].verdict_text == "clean"


HALF_WAY = {"org-a": ["a1", "a2"], "org-b": ["b1", "b2"], DEFAULT_ORG: ["d1"]}


def _rows(paused_state: str) -> dict[str, dict[str, Any]]:
    return {
        DEFAULT_ORG: {"state": "active", "reason": None},
        "org-a": {"state": "active", "reason": None},
        "org-b": {"state": paused_state, "reason": "Salesforce refused the integration user's token"},
    }


def test_the_pause_snapshot_is_taken_when_the_paused_org_waits_and_the_others_have_gone_on() -> None:
    """Org B paused with its half-way bookings pending, every other org's synced: the snapshot carries B's
    state and reason, how many wait and how many of the others went out, and every org's state."""
    states = {"a1": "synced", "a2": "synced", "d1": "synced", "b1": "pending", "b2": "pending"}
    seen = snapshot(_rows("paused"), states, "org-b", HALF_WAY)
    assert seen is not None
    assert (seen.state, seen.waiting, seen.others_synced, seen.others) == ("paused", 2, 3, 3)
    assert "token" in seen.reason
    assert seen.states == {DEFAULT_ORG: "active", "org-a": "active", "org-b": "paused"}


def test_no_pause_snapshot_before_the_pause_shows_or_while_another_org_lags() -> None:
    """No snapshot while B still reads active, while another org's half-way booking is pending or has no
    ledger row yet, or once one of B's own has gone out (it no longer waits)."""
    waiting = {"a1": "synced", "a2": "synced", "d1": "synced", "b1": "pending", "b2": "pending"}
    assert snapshot(_rows("active"), waiting, "org-b", HALF_WAY) is None
    assert snapshot(_rows("paused"), {**waiting, "a2": "pending"}, "org-b", HALF_WAY) is None
    unrecorded = {k: v for k, v in waiting.items() if k != "d1"}
    assert snapshot(_rows("paused"), unrecorded, "org-b", HALF_WAY) is None
    assert snapshot(_rows("paused"), {**waiting, "b1": "synced"}, "org-b", HALF_WAY) is None
    assert snapshot({}, waiting, "org-b", HALF_WAY) is None
