"""End-to-end fixtures: a scheduler database, the emulator process and the daemon process per test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bridge.devtools.stack import (
    DaemonProcess,
    EmulatorProcess,
    SalesforceSeed,
    Scheduler,
    seed_salesforce,
    write_config,
)
from bridge.source.setup import drop_slot


@dataclass
class Stack:
    """Everything one end-to-end scenario needs."""

    workdir: Path
    dsn: str
    ledger_url: str
    emulator: EmulatorProcess
    scheduler: Scheduler
    seed: SalesforceSeed
    slot: str
    daemons: list[DaemonProcess] = field(default_factory=list)

    def daemon(
        self,
        name: str = "daemon",
        on_cancel: str = "delete",
        backfill: str = "since:2000-01-01",
        extra: str = "",
        setup: bool = True,
    ) -> DaemonProcess:
        """A daemon process for this stack (configured, set up, not yet started)."""
        config = write_config(
            self.workdir / f"{name}.toml",
            dsn=self.dsn,
            ledger_url=self.ledger_url,
            emulator_url=self.emulator.url,
            slot=self.slot,
            on_cancel=on_cancel,
            backfill=backfill,
            extra=extra,
        )
        daemon = DaemonProcess(config, self.workdir, name)
        self.daemons.append(daemon)
        if setup:
            result = daemon.setup()
            assert result.returncode == 0, result.stdout + result.stderr
        return daemon


SECRETS = ("e2e-secret-value", "e2e-admin-token-value")
PERSONAL = ("Invitee Person", "Private Person", "@example.org", "@example.com")


def assert_logs_clean(daemon: DaemonProcess) -> None:
    """No configured secret, access token, invitee or user name or email appears in any log line."""
    text = daemon.log_path.read_text(errors="replace")
    assert text, "the daemon wrote no log"
    for needle in (*SECRETS, *PERSONAL):
        assert needle not in text, f"{needle!r} leaked into {daemon.log_path}"
    assert "Bearer " not in text and "access_token" not in text


@contextlib.contextmanager
def make_stack(
    tmp_path: Path, scheduler_dsn: str, org_file: Path | None = None, *, pubsub: bool = False
) -> Iterator[Stack]:
    """A scheduler database, a running emulator seeded with users and people (serving the Pub/Sub API too
    with `pubsub`), and a ledger path."""
    emulator = EmulatorProcess(tmp_path, org_file=org_file, pubsub=pubsub)
    scheduler = Scheduler(scheduler_dsn)
    # Slots are cluster-wide: one per test database.
    slot = "mb_" + scheduler_dsn.rsplit("/", 1)[1]
    daemons: list[DaemonProcess] = []
    try:
        seed = seed_salesforce(emulator)
        ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
        yield Stack(tmp_path, scheduler_dsn, ledger_url, emulator, scheduler, seed, slot, daemons)
    finally:
        for daemon in daemons:
            if daemon.alive():
                daemon.kill9()
        scheduler.close()
        emulator.stop()
        drop_slot(scheduler_dsn, slot)


@pytest.fixture
def stack(tmp_path: Path, scheduler_dsn: str) -> Iterator[Stack]:
    """A stack on the emulator's default org (long polls of 110 s, as Salesforce)."""
    with make_stack(tmp_path, scheduler_dsn) as built:
        yield built
