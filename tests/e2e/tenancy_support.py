"""The tenancy e2e tests' stack: a scheduler database, one emulator hosting many orgs, and the daemon in
tenancy mode over them (bridge/devtools/tenants.py builds the world and judges it)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bridge.devtools.stack import (
    ROOT,
    DaemonProcess,
    EmulatorProcess,
    Scheduler,
    ledger_connection,
    wait_until,
)
from bridge.devtools.tenants import TenantOrg, TenantWorld, Verdict, kinds, write_tenancy_config
from bridge.source.setup import drop_slot

from .conftest import assert_logs_clean

ORGS = 20
# write_config's 5 s stall setting rebuilds a CometD client whose connect waits 25 s, less than the emulator's
# 110 s long poll: with twenty-one quiet orgs, a rebuild (and an inbound reconciliation) every few seconds.
QUIET_STREAMS = {"MOGLI_BRIDGE_SYNC__STREAMING_STALL_SECONDS": "30"}


@dataclass
class TenancyStack:
    """One tenancy scenario: the world, the ledger and the daemons started on it."""

    workdir: Path
    dsn: str
    ledger_url: str
    slot: str
    world: TenantWorld
    daemons: list[DaemonProcess] = field(default_factory=list)

    def daemon(self, name: str = "daemon", extra: str = "") -> DaemonProcess:
        """A daemon in tenancy mode (configured and set up, not yet started)."""
        config = write_tenancy_config(
            self.workdir / f"{name}.toml",
            self.world,
            dsn=self.dsn,
            ledger_url=self.ledger_url,
            slot=self.slot,
            extra=extra,
        )
        daemon = DaemonProcess(config, self.workdir, name, env=QUIET_STREAMS)
        self.daemons.append(daemon)
        result = daemon.setup()
        assert result.returncode == 0, result.stdout + result.stderr
        return daemon

    def assert_running(self) -> None:
        """AssertionError with the log's last lines when a started daemon has exited on its own."""
        for daemon in self.daemons:
            if daemon.proc is not None and daemon.proc.poll() is not None:
                tail = daemon.log_path.read_text(errors="replace")[-3000:]
                raise AssertionError(f"{daemon.log_path.name} exited {daemon.proc.returncode}: {tail}")


@contextlib.contextmanager
def make_tenancy_stack(tmp_path: Path, scheduler_dsn: str, orgs: int = ORGS) -> Iterator[TenancyStack]:
    """A scheduler database and an emulator hosting `orgs` connected customer orgs besides the default org."""
    emulator = EmulatorProcess(tmp_path)
    scheduler = Scheduler(scheduler_dsn)
    slot = "mb_" + scheduler_dsn.rsplit("/", 1)[1]
    stack: TenancyStack | None = None
    try:
        world = TenantWorld(emulator, scheduler, tmp_path)
        for n in range(orgs):
            world.add_org(f"Customer {n:02d}")
        stack = TenancyStack(tmp_path, scheduler_dsn, f"sqlite:///{tmp_path / 'ledger.sqlite3'}", slot, world)
        yield stack
    finally:
        for daemon in stack.daemons if stack else []:
            if daemon.alive():
                daemon.kill9()
        scheduler.close()
        emulator.stop()
        drop_slot(scheduler_dsn, slot)


@dataclass(frozen=True)
class DefaultOrg:
    """The default org's side of a scenario: a link of a user without organization, and a Contact."""

    link: str
    contact: str


def default_org_link(world: TenantWorld) -> DefaultOrg:
    """A one-on-one link owned by a scheduler user without organization (connected to a seeded user of the
    main emulator org, the default org of `[salesforce]`), and a Contact of that org."""
    seeded = next(u for u in world.emulator.records("User") if u["Username"] == "owner1@example.com")
    owner = world.add_user(None, seeded["Id"])
    link = world.scheduler.add_link("one_on_one", owner, title="Default intro", description="Default agenda")
    return DefaultOrg(link, world.emulator.create("Contact", {"LastName": "DefaultContact"}))


def org_rows(ledger_url: str) -> dict[str, dict[str, Any]]:
    """The ledger's `orgs` table by org_id ({} while the daemon has not created it)."""
    try:
        with ledger_connection(ledger_url) as conn:
            rows = conn.execute(sa.text("SELECT * FROM orgs")).mappings().all()
    except sa.exc.OperationalError:
        return {}
    return {str(r["org_id"]): dict(r) for r in rows}


def activities(ledger_url: str) -> dict[str, dict[str, Any]]:
    """The ledger's activities by booking id ({} before the schema exists)."""
    try:
        with ledger_connection(ledger_url) as conn:
            rows = conn.execute(sa.text("SELECT * FROM activities")).mappings().all()
    except sa.exc.OperationalError:
        return {}
    return {str(r["booking_id"]): dict(r) for r in rows}


def wait_settled(stack: TenancyStack, bookings: list[str], timeout: float = 90, what: str = "") -> None:
    """Wait until each of these bookings is out of 'pending' in the ledger."""

    def settled() -> bool:
        stack.assert_running()
        acts = activities(stack.ledger_url)
        return all(b in acts and acts[b]["state"] != "pending" for b in bookings)

    wait_until(settled, timeout=timeout, interval=0.5, what=what or f"{len(bookings)} bookings to settle")


def wait_state(stack: TenancyStack, org: TenantOrg, state: str, timeout: float = 60) -> dict[str, Any]:
    """Wait until the org's row in `orgs` shows `state`; returns the row."""

    def reached() -> dict[str, Any] | None:
        stack.assert_running()
        row = org_rows(stack.ledger_url).get(org.org_id)
        return row if row and row["state"] == state else None

    return wait_until(reached, timeout=timeout, interval=0.5, what=f"{org.name} to be {state}")  # type: ignore[no-any-return]


def orgs_command(daemon: DaemonProcess) -> dict[str, dict[str, Any]]:
    """`mogli-bridge orgs --format json --limit 0` on the daemon's config: its rows by org id."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "--config",
            str(daemon.config),
            "orgs",
            "--format",
            "json",
            "--limit",
            "0",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return {str(row["org_id"]): row for row in json.loads(out.stdout)}


def reconcile_org(daemon: DaemonProcess, org: TenantOrg) -> dict[str, Any]:
    """`mogli-bridge reconcile --json --dry-run --org ID` through the daemon: the JSON it printed."""
    args = ["--config", str(daemon.config), "reconcile", "--json", "--dry-run", "--org", org.org_id]
    out = subprocess.run(
        [sys.executable, "-m", "bridge", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def stopped(daemon: DaemonProcess) -> int:
    """SIGTERM a running daemon and wait; its exit code (also of a daemon that already ended)."""
    assert daemon.proc is not None
    return daemon.terminate() if daemon.alive() else daemon.proc.returncode


def events_of(org: TenantOrg, bookings: list[str]) -> list[dict[str, Any]]:
    """The org's live Events of these bookings."""
    wanted = set(bookings)
    return [e for e in org.client.records("Event") if e.get("Scheduling_Booking_Id__c") in wanted]


def assert_clean(result: Verdict) -> None:
    """Nothing lost, doubled, wrong, cross-org or orphaned (the message lists what was found)."""
    figures = (result.lost, result.doubled, result.wrong_fields, result.cross_org, result.orphans)
    assert result.clean, (
        f"lost/doubled/wrong/cross/orphan {figures} {dict(kinds(result))}: {result.differences[:8]}"
    )


def assert_ledger_orgs(stack: TenancyStack) -> None:
    """Every activity row carries its booking's org (NULL for the default org)."""
    s = stack.world.scheduler
    users = {u["id"]: u for u in s.rows("users")}
    owner_org = {k["id"]: users[k["owner_id"]]["organization_id"] for k in s.rows("scheduling_links")}
    acts = activities(stack.ledger_url)
    wrong = {
        b["id"]: (acts[b["id"]]["org_id"], owner_org[b["link_id"]])
        for b in s.rows("bookings")
        if b["id"] in acts and acts[b["id"]]["org_id"] != owner_org[b["link_id"]]
    }
    assert not wrong, f"activities in the wrong org (ledger, expected): {list(wrong.items())[:5]}"


def assert_tenancy_logs_clean(daemon: DaemonProcess, world: TenantWorld) -> None:
    """The daemon's log holds no secret, personal data, private key or integration user name."""
    assert_logs_clean(daemon)
    text = daemon.log_path.read_text(errors="replace")
    assert "PRIVATE KEY" not in text
    assert "@tenant.example" not in text, "an integration or booking user's username leaked into the log"
