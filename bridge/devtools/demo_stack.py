"""What `mogli-bridge demo` starts, how it hands the running stack over, and how a signal stops it all.

SIGINT, SIGTERM and SIGHUP only set a flag. The demo checks it between its steps and while it waits; then
`DemoStack.stop` stops the daemon (it drains while Salesforce still answers), the emulator, then PostgreSQL.
The daemon and the emulator run in their own process groups, so a terminal's Ctrl-C reaches only the demo and
the order holds.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bridge.devtools.localpg import LocalPostgres, free_port
from bridge.devtools.stack import DaemonProcess, EmulatorProcess, HttpError, Scheduler, http_json, wait_until

DAEMON_STOP_SECONDS = 30.0  # the daemon's own drain deadline is 20 s (supervisor.SHUTDOWN_GRACE_SECONDS)


class DemoStopped(Exception):
    """A stop signal arrived while the demo was still starting."""


class StopSignals:
    """Installs the stop handlers for its `with` block; the flag they set is read by `check` and `wait`."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self._event = threading.Event()
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        self.received = self.received or signal.Signals(signum).name
        self._event.set()

    def check(self) -> None:
        """DemoStopped when a stop signal has arrived."""
        if self._event.is_set():
            raise DemoStopped(self.received)

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """`wait_until`, giving up early (DemoStopped) when a stop signal arrives."""

        def checked() -> Any:
            self.check()
            return predicate()

        return wait_until(checked, timeout=timeout, what=what)

    def wait(self) -> None:
        """Block until a stop signal arrives."""
        while not self._event.wait(0.5):
            pass


class DemoStack:
    """The demo's folder, its PostgreSQL, emulator and daemon, and the one place that stops them."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="mogli-demo-"))
        self.daemon_killed = False  # the daemon did not drain when asked and was killed: keep its log
        self.config = self.workdir / "bridge.toml"
        self.ledger_url = f"sqlite:///{self.workdir / 'ledger.sqlite3'}"
        self.admin_port = free_port()
        self.admin_token = secrets.token_urlsafe(18)
        self.dsn = ""
        self.pg: LocalPostgres | None = None
        self.emu: EmulatorProcess | None = None
        self.daemon: DaemonProcess | None = None
        self.sched: Scheduler | None = None

    @property
    def admin_url(self) -> str:
        """The admin API's base URL (the status page is its root)."""
        return f"http://127.0.0.1:{self.admin_port}"

    def daemon_ready(self) -> bool:
        """The daemon's own /api/status says ready."""
        try:
            _, body = http_json(
                "GET",
                f"{self.admin_url}/api/status",
                headers={"Authorization": f"Bearer {self.admin_token}"},
                timeout=5,
            )
        except (OSError, HttpError):
            return False
        return isinstance(body, dict) and body.get("ready") is True

    def postgres_pid(self) -> int:
        """The PostgreSQL server's process id (the first line of its postmaster.pid)."""
        assert self.pg is not None
        return int((self.pg.data / "postmaster.pid").read_text().split()[0])

    def hand_over(self, orgs: Sequence[tuple[str, str, str]] = ()) -> None:
        """Tell the operator how to reach each part of the running demo (each customer org: its name, org id
        and URL), and how to stop it."""
        assert self.pg is not None and self.emu is not None
        assert self.daemon is not None and self.daemon.proc is not None
        cli, emu, pid = _cli(), self.emu, os.getpid()
        postgres = self.postgres_pid()
        width = max((len(name) for name, _, _ in orgs), default=0)
        customers = "".join(
            f"\n  org           {name:<{width}}  {url}   (its own Salesforce)"
            f"\n                its status page  {self.admin_url}/?org={org_id}"
            for name, org_id, url in orgs
        )
        # Plain print, not the rich console: the line to paste must never be wrapped or restyled.
        print(
            f"""
The demo keeps running. Paste this line into another shell; every command there then talks to the demo:

  export MOGLI_BRIDGE_CONFIG={shlex.quote(str(self.config))}

  then, e.g.:  {cli} status   or   {cli} orgs

  status page   {self.admin_url}/   (one org's page: ?org=ID)
  admin API     {self.admin_url}/api/status   (header  Authorization: Bearer <admin token>)
  admin token   {self.admin_token}   (the API and the page's reconcile form)
  emulator      {emu.url}   (the default org: curl {emu.url}/__emulator/records/Event){customers}
  scheduler     psql {self.dsn}
  ledger        {self.ledger_url}
  config        {self.config}   (removed when the demo stops)
  logs          {self.daemon.log_path}, {emu.log_path}
  processes     demo {pid}, daemon {self.daemon.proc.pid}, emulator {emu.proc.pid}, PostgreSQL {postgres}

Ctrl-C or `kill {pid}` stops the daemon, the emulator and PostgreSQL, in that order.""",
            flush=True,
        )

    def stop(self, report: Callable[[str], None]) -> None:
        """Stop what was started, in order, reporting each part as it stops; a part that fails to stop does
        not keep the later ones running (the stack unwinds last-pushed first)."""
        with contextlib.ExitStack() as parts:
            if self.pg is not None:
                parts.callback(self._stop_postgres, self.pg, report)
            if self.emu is not None:
                parts.callback(self._stop_emulator, self.emu, report)
            if self.sched is not None:
                parts.callback(self.sched.close)
            if self.daemon is not None and self.daemon.proc is not None:
                parts.callback(self._stop_daemon, self.daemon, report)

    def _stop_daemon(self, daemon: DaemonProcess, report: Callable[[str], None]) -> None:
        ending, self.daemon_killed = _drain(daemon)
        report(f"stopped the daemon ({ending})")

    @staticmethod
    def _stop_emulator(emu: EmulatorProcess, report: Callable[[str], None]) -> None:
        emu.stop()
        report(f"stopped the emulator (exit {emu.proc.returncode})")

    @staticmethod
    def _stop_postgres(pg: LocalPostgres, report: Callable[[str], None]) -> None:
        pg.stop()
        report("stopped PostgreSQL")

    def remove_files(self) -> None:
        """Delete the demo's folder: its config, ledger and logs."""
        shutil.rmtree(self.workdir, ignore_errors=True)


def _drain(daemon: DaemonProcess) -> tuple[str, bool]:
    """SIGTERM, a drain of up to DAEMON_STOP_SECONDS, then SIGKILL; how it ended, and whether killed."""
    assert daemon.proc is not None
    if not daemon.alive():
        return f"it had already exited with {daemon.proc.returncode}", False
    try:
        return f"exit {daemon.terminate(timeout=DAEMON_STOP_SECONDS)}", False
    except subprocess.TimeoutExpired:
        daemon.kill9()
        return f"killed: still draining after {DAEMON_STOP_SECONDS:.0f}s", True


def _cli() -> str:
    """How to call `mogli-bridge` from another shell: its bare name when PATH finds this installation."""
    script = Path(sys.executable).parent / "mogli-bridge"
    if not script.exists():
        return f"{sys.executable} -m bridge"
    return "mogli-bridge" if shutil.which("mogli-bridge") == str(script) else str(script)
