"""`mogli-bridge demo`: a private PostgreSQL, the emulator and the daemon in tenancy mode, the default org and
three customer orgs with a realistic mix of bookings each, one org paused half-way and resumed, and a
side-by-side printout of what each org's Salesforce holds and what the ledger says.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

from bridge.devtools.demo_orgs import (
    CLEAN,
    CustomerOrgs,
    OrgFigures,
    PauseSnapshot,
    figures,
    pause_snapshot,
    resumed,
)
from bridge.devtools.demo_stack import DemoStack, DemoStopped, StopSignals
from bridge.devtools.localpg import LocalPostgres
from bridge.devtools.stack import DaemonProcess, EmulatorProcess, Scheduler, ledger_activities
from bridge.devtools.tenants import TenantWorld, write_tenancy_config

PIPE_WIDTH = 200  # no terminal to fit (a pipe, a file, a test): wide enough that no table cell is cut


def _console() -> Console:
    """On a terminal, its width (rich reads it, or $COLUMNS); elsewhere PIPE_WIDTH."""
    return Console() if sys.stdout.isatty() else Console(width=PIPE_WIDTH)


console = _console()


def _step(text: str) -> None:
    console.print(f"[bold cyan]==>[/] {text}")


def _started(what: str, pid: int) -> None:
    console.print(f"    {what} runs as pid {pid}")


def _short(value: Any) -> str:
    return "" if value is None else str(value)


def _when(value: str | None) -> str:
    return (value or "")[5:16].replace("T", " ")


class DemoWorld:
    """The people and links of the demo, in both systems."""

    def __init__(self, emu: EmulatorProcess, sched: Scheduler) -> None:
        self.emu, self.sched = emu, sched
        self.sf_users = {
            name: emu.create(
                "User",
                {
                    "LastName": name,
                    "Username": f"{name.split()[0].lower()}@demo.example",
                    "Email": f"{name.split()[0].lower()}@demo.example",
                },
            )
            for name in ("Alice Owner", "Bob Rotation", "Carol Rotation")
        }
        self.account = emu.create("Account", {"Name": "Globex Corporation"})
        self.contacts = [
            emu.create("Contact", {"LastName": n, "AccountId": self.account})
            for n in ("Dana Contact", "Eli Contact", "Fay Contact")
        ]
        self.lead = emu.create("Lead", {"LastName": "Gus Lead", "Company": "Initech"})
        self.users = {name: sched.add_user(sf_id) for name, sf_id in self.sf_users.items()}
        alice = self.users["Alice Owner"]
        self.one = sched.add_link(
            "one_on_one", alice, "Intro call with Alice", "A 30-minute first conversation."
        )
        self.rr = sched.add_link(
            "round_robin", alice, "Sales demo", "A tour of the product with our sales team."
        )
        self.rsvp = sched.add_link(
            "rsvp", alice, "Quarterly webinar", "What's new this quarter.", duration=60
        )

    def book(self) -> dict[str, str]:
        """A realistic mix: every link type, a Lead, an Account, then a reschedule and a cancellation."""
        s, base = self.sched, datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
        b = {
            "1:1 with a Contact": s.add_booking(self.one, start=base, related=self.contacts[0]),
            "round robin with a Lead": s.add_booking(
                self.rr,
                start=base + timedelta(hours=2),
                related=self.lead,
                assigned=self.users["Bob Rotation"],
            ),
            "round robin for an Account": s.add_booking(
                self.rr,
                start=base + timedelta(hours=3),
                related=self.account,
                assigned=self.users["Carol Rotation"],
            ),
        }
        for i, contact in enumerate(self.contacts):
            b[f"RSVP attendee {i + 1}"] = s.add_booking(
                self.rsvp, start=base + timedelta(days=1), minutes=60, related=contact
            )
        return b

    def change(self, b: dict[str, str]) -> None:
        """Reschedule the 1:1 by a day and cancel one RSVP."""
        self.sched.execute(
            "UPDATE scheduler.bookings SET start_at = start_at + interval '1 day', "
            "end_at = end_at + interval '1 day' WHERE id = %s",
            (b["1:1 with a Contact"],),
        )
        self.sched.execute(
            "UPDATE scheduler.bookings SET status = 'cancelled' WHERE id = %s", (b["RSVP attendee 3"],)
        )


def _print_results(world: DemoWorld, bookings: dict[str, str], ledger_url: str) -> None:
    emu = world.emu
    names: dict[str, str] = {}
    for sobject in ("User", "Contact", "Lead", "Account"):
        for rec in emu.records(sobject):
            names[rec["Id"]] = rec.get("Name") or rec.get("LastName") or rec["Id"]
    moglis = emu.records("Mogli_Event__c")
    names.update({m["Id"]: f"Mogli Event {m['Name']!r}" for m in moglis})
    t = Table(title="The default org's Salesforce: Mogli Events (one per link)")
    for col in ("Id", "Name", "Link_Type__c", "Owner (Assigned To)", "Scheduling_Link_Id__c"):
        t.add_column(col, no_wrap=True)
    for m in moglis:
        t.add_row(
            m["Id"],
            m["Name"],
            m.get("Link_Type__c"),
            names.get(m["OwnerId"], m["OwnerId"]),
            m["Scheduling_Link_Id__c"],
        )
    console.print(t)

    events = {e["Scheduling_Booking_Id__c"]: e for e in emu.records("Event", include_deleted=True)}
    acts = ledger_activities(ledger_url)
    t = Table(title="Each booking of the default org: the Salesforce Event beside its ledger row")
    for col in (
        "booking",
        "Assigned To",
        "Name (WhoId)",
        "Related To (WhatId)",
        "Start (UTC)",
        "Subject",
        "in org",
        "ledger state",
        "ledger activity_id",
    ):
        t.add_column(col, no_wrap=True)
    for label, bid in bookings.items():
        ev, act = events.get(bid, {}), acts.get(bid, {})
        t.add_row(
            label,
            names.get(ev.get("OwnerId", ""), _short(ev.get("OwnerId"))),
            names.get(ev.get("WhoId") or "", ""),
            names.get(ev.get("WhatId") or "", ""),
            _when(ev.get("StartDateTime")),
            _short(ev.get("Subject")),
            "deleted" if ev.get("IsDeleted") else ("yes" if ev else "no"),
            _short(act.get("state")),
            _short(act.get("activity_id")),
        )
    console.print(t)


def run_demo(keep_running: bool = False) -> int:
    """Run the demo end to end (with `keep_running`, until a stop signal); returns the exit code."""
    with StopSignals() as stop:
        stack = DemoStack()
        code = 1  # an exception keeps the demo's files for a look
        try:
            code = _run(stack, stop, keep_running)
        except DemoStopped:
            code = 0  # stopping when asked to is a clean end, even before the demo finished
        finally:
            if stop.received:
                _step(f"{stop.received}: stopping the daemon, the emulator and PostgreSQL")
            stack.stop(_step)
            if code == 0 and not stack.daemon_killed:
                stack.remove_files()
            else:
                console.print(f"the demo's config, ledger and logs are kept in {stack.workdir}")
    return code


def _start(stack: DemoStack, stop: StopSignals) -> TenantWorld | None:
    """PostgreSQL, the emulator and `setup` in tenancy mode; the tenant world (the connected app's key), or
    None (having said why) when `setup` failed."""
    _step("starting a private PostgreSQL (wal_level=logical)")
    stack.pg = LocalPostgres().start()
    _started("PostgreSQL", stack.postgres_pid())
    dsn = stack.dsn = stack.pg.create_database("scheduler")
    stack.sched = Scheduler(dsn)
    stop.check()
    _step("starting the Salesforce emulator (it hosts the default org and every customer org)")
    emu = stack.emu = EmulatorProcess(stack.workdir, own_group=True)
    _started("the emulator", emu.proc.pid)
    tenants = TenantWorld(emu, stack.sched, stack.workdir)
    write_tenancy_config(
        stack.config,
        tenants,
        dsn=dsn,
        ledger_url=stack.ledger_url,
        backfill="upcoming",
        admin_port=stack.admin_port,
        admin_token=stack.admin_token,
    )
    stack.daemon = DaemonProcess(stack.config, stack.workdir, own_group=True)
    stop.check()
    _step("mogli-bridge setup --create-demo-schema   (\\[tenancy] enabled = true)")
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "--config", str(stack.config), "setup", "--create-demo-schema"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    stop.check()
    print(out.stdout.rstrip())
    if out.returncode != 0:
        console.print(out.stderr)
        return None
    return tenants


def _run(stack: DemoStack, stop: StopSignals, keep_running: bool) -> int:
    """Start the stack, book in every org, pause one org half-way and mend it, check; with `keep_running`
    hand it over and wait for a stop signal."""
    tenants = _start(stack, stop)
    if tenants is None:
        return 1
    assert stack.emu is not None and stack.sched is not None and stack.daemon is not None
    emu, ledger_url = stack.emu, stack.ledger_url
    world = DemoWorld(emu, stack.sched)
    customers = CustomerOrgs(tenants)
    _step("connecting three customer orgs, each its own Salesforce (the default org is the emulator's own)")
    customers.create()
    for c in customers.customers:
        console.print(f"    {c.org.name:<15} org {c.org.salesforce_org_id} at {c.org.url}")
    _step("starting the daemon (mogli-bridge run)")
    stack.daemon.start()
    assert stack.daemon.proc is not None
    _started("the daemon", stack.daemon.proc.pid)
    stop.check()
    _step("booking in every org: a 1:1, a round-robin and an RSVP link (Contacts, a Lead, an Account)")
    bookings = world.book()
    made = len(bookings) + len(customers.book_first())
    stop.wait_for(lambda: _settled(ledger_url, made), 60, "the bookings to reach Salesforce")
    if not _pause_and_resume(customers, world, bookings, ledger_url, stop):
        return 1
    _print_results(world, bookings, ledger_url)
    return _verdict(stack, tenants, customers, keep_running, stop)


def _pause_and_resume(
    customers: CustomerOrgs, world: DemoWorld, bookings: dict[str, str], ledger_url: str, stop: StopSignals
) -> bool:
    """Half-way: deactivate one org's integration user, book on, show it paused while the others go on,
    reactivate it and see it resume by itself; False when its waiting bookings did not all go out."""
    paused = customers.paused.org
    _step(f"half-way: deactivating the integration user of {paused.name} (Salesforce refuses its token)")
    customers.set_paused_user_active(False)
    _step("booking again in every org; rescheduling the default org's 1:1 and cancelling one RSVP attendee")
    half_way = customers.book_second()
    world.change(bookings)
    seen: PauseSnapshot = stop.wait_for(
        lambda: _changed(world.emu, bookings) and pause_snapshot(ledger_url, paused.org_id, half_way),
        60,
        f"{paused.name} to pause while the other orgs go on",
    )
    names = customers.names()
    console.print(f"    {paused.name}: [bold yellow]{seen.state}[/] - {seen.reason}")
    console.print(f"    its {seen.waiting} new bookings wait in the ledger (pending); the others keep going:")
    console.print(f"    {seen.others_synced} of their {seen.others} new bookings are in their Salesforce")
    listed = (f"{name} {seen.states.get(org, '?')}" for org, name in names.items())
    console.print("    states: " + ", ".join(listed))
    _step(f"reactivating the integration user of {paused.name}: the org resumes by itself")
    customers.set_paused_user_active(True)
    held = half_way[paused.org_id]
    stop.wait_for(lambda: resumed(ledger_url, paused.org_id, held), 60, f"{paused.name} to resume")
    console.print(f"    {paused.name}: [bold green]resumed[/] - its {len(held)} waiting bookings are synced")
    total = len(world.sched.rows("bookings"))
    stop.wait_for(lambda: _settled(ledger_url, total), 60, "the ledger to settle")
    return True


def _verdict(
    stack: DemoStack, tenants: TenantWorld, customers: CustomerOrgs, keep_running: bool, stop: StopSignals
) -> int:
    """Every org side by side, the cross-org verdict, the `orgs` table; the hand-over when kept running."""
    assert stack.emu is not None and stack.daemon is not None
    rows = figures(tenants, customers.names(), stack.ledger_url)
    _print_orgs(rows)
    judged = tenants.verdict()
    agree = all(r.ledger_differences == 0 for r in rows)
    console.print(
        "invariant check: "
        + ("[green]scheduler, ledger and Salesforce agree[/]" if agree else "[red]differences found[/]")
        + f" in {len(rows)} orgs"
    )
    console.print(
        f"cross-org verdict over {len(rows)} orgs: lost {judged.lost}, doubled {judged.doubled}, "
        f"wrong {judged.wrong_fields}, cross-org {judged.cross_org}, orphans {judged.orphans}"
        + (" - [green]clean[/]" if judged.clean else "")
    )
    stats = stack.emu.stats()
    console.print(f"Salesforce API requests made: {stats.get('api_requests', {}).get('total', stats)}")
    _step("mogli-bridge orgs")
    print(_orgs_command(stack), flush=True)
    if keep_running:
        stop.wait_for(stack.daemon_ready, 60, "the daemon to report ready")
        stack.hand_over([(c.org.name, c.org.org_id, c.org.url) for c in customers.customers])
        stop.wait()
    return 0 if agree and judged.clean else 1


def _print_orgs(rows: list[OrgFigures]) -> None:
    t = Table(
        title="Every org side by side",
        caption=f"counted in the scheduler, each org's own Salesforce and the ledger; {CLEAN}",
    )
    for col in ("org", "state", "bookings", "cancelled", "Events", "Mogli Events", "ledger", "verdict"):
        t.add_column(col, no_wrap=True)
    for r in rows:
        ledger = "agrees" if r.ledger_differences == 0 else f"{r.ledger_differences} differences"
        counts = (r.bookings, r.cancelled, r.events, r.mogli_events)
        t.add_row(r.name, r.state, *map(str, counts), ledger, r.verdict_text)
    sums = (sum(getattr(r, k) for r in rows) for k in ("bookings", "cancelled", "events", "mogli_events"))
    t.add_row("all orgs", "", *map(str, sums), "", "")
    console.print(t)


def _orgs_command(stack: DemoStack) -> str:
    """`mogli-bridge orgs` on the demo's config, at the console's width."""
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "--config", str(stack.config), "orgs", "--format", "table"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": str(console.width)},
    )
    return (out.stdout + out.stderr).rstrip()


def _settled(ledger_url: str, n: int) -> bool:
    try:
        acts = ledger_activities(ledger_url)
    except Exception:
        return False
    return len(acts) >= n and all(a["state"] != "pending" for a in acts.values())


def _changed(emu: EmulatorProcess, bookings: dict[str, str]) -> bool:
    live = {e["Scheduling_Booking_Id__c"] for e in emu.records("Event")}
    return bookings["RSVP attendee 3"] not in live
