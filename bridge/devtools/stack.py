"""A local stack of real processes: private PostgreSQL, the emulator and the daemon.

The demo, the benchmark and the end-to-end tests all run the product this way: the emulator and the daemon
as separate processes, the scheduling database as a real PostgreSQL cluster. (Over 400 lines: developer
tooling, one fixture world the tests, the demo and the bench share.)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2

from bridge.devtools.invariants import Tally, tally
from bridge.devtools.localpg import free_port

ROOT = Path(__file__).resolve().parents[2]


def wait_until(
    predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2, what: str = ""
) -> Any:
    """Poll until `predicate()` is truthy; returns its value; AssertionError naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or predicate}: last={last!r}")


class HttpError(Exception):
    """A non-2xx answer from the emulator."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


def http_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, Any]:
    """One HTTP request with a JSON (or form) body; returns (status, decoded JSON or None)."""
    data: bytes | None = None
    hdrs = dict(headers or {})
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        hdrs["Content-Type"] = "application/x-www-form-urlencoded"
    elif body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read().decode(errors="replace")
        raise HttpError(exc.code, raw) from None


class EmulatorProcess:
    """`mogli-bridge emulator` in a subprocess, with helpers for its control API and plain REST."""

    def __init__(
        self,
        workdir: Path,
        latency_ms: int = 0,
        org_file: Path | None = None,
        *,
        pubsub: bool = False,
        own_group: bool = False,
    ) -> None:
        self.port = free_port()
        self.url = f"http://localhost:{self.port}"
        self.grpc_port = free_port() if pubsub else None  # the Pub/Sub API (plaintext gRPC), when asked for
        self.log_path = workdir / "emulator.log"
        args = [
            sys.executable,
            "-m",
            "bridge",
            "emulator",
            "--port",
            str(self.port),
            "--latency-ms",
            str(latency_ms),
        ]
        if org_file is not None:
            args += ["--org", str(org_file)]
        if self.grpc_port is not None:
            args += ["--grpc-port", str(self.grpc_port)]
        self._log = self.log_path.open("ab")
        # own_group: a terminal's Ctrl-C reaches only the parent (the demo), which stops this process in turn.
        group = 0 if own_group else None
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT, process_group=group
        )
        wait_until(self._up, timeout=30, what="emulator to listen")
        self._token: str | None = None

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"emulator exited: {self.log_path.read_text()[-2000:]}")
        try:
            return http_json("GET", f"{self.url}/__emulator/stats", timeout=2)[0] == 200
        except (OSError, HttpError):
            return False

    def stop(self) -> None:
        """Terminate the process."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()

    # -- control API
    def records(self, sobject: str, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every record of an object, from the control API."""
        q = "?include_deleted=1" if include_deleted else ""
        _, body = http_json("GET", f"{self.url}/__emulator/records/{sobject}{q}")
        return body["records"] if isinstance(body, dict) else body  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        """Request counters."""
        return http_json("GET", f"{self.url}/__emulator/stats")[1]  # type: ignore[no-any-return]

    def pubsub_env(self) -> dict[str, str]:
        """The daemon's environment overrides that take change events from this emulator's Pub/Sub API."""
        assert self.grpc_port is not None, "this emulator was started without pubsub=True"
        return {
            "MOGLI_BRIDGE_SYNC__TRANSPORT": "pubsub",
            "MOGLI_BRIDGE_SYNC__PUBSUB_ENDPOINT": f"127.0.0.1:{self.grpc_port}",
            "MOGLI_BRIDGE_SYNC__PUBSUB_PLAINTEXT": "true",
        }

    def pubsub_stats(self) -> dict[str, Any]:
        """Open Subscribe calls and fault counters of the Pub/Sub API."""
        return http_json("GET", f"{self.url}/__emulator/pubsub/stats")[1]  # type: ignore[no-any-return]

    def add_fault(self, **rule: Any) -> None:
        """Add a fault rule."""
        http_json("POST", f"{self.url}/__emulator/faults", rule)

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        http_json("DELETE", f"{self.url}/__emulator/faults")

    def faults(self) -> list[dict[str, Any]]:
        """The active fault rules, in matching order, each with the `times` it has left."""
        return http_json("GET", f"{self.url}/__emulator/faults")[1]["rules"]  # type: ignore[no-any-return]

    def control(self, path: str, body: Any = None) -> Any:
        """POST to a control route."""
        return http_json("POST", f"{self.url}/__emulator/{path}", body or {})[1]

    # -- hosted orgs (CONTRACT §9)
    def create_org(
        self, name: str, *, jwt_public_key: str | None = None, users: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """A new org of this emulator: `{"org_id", "name", "url", "users": [{"Id", "Username", ...}]}`."""
        body: dict[str, Any] = {"name": name}
        if jwt_public_key is not None:
            body["jwt_public_key"] = jwt_public_key
        if users is not None:
            body["users"] = users
        return http_json("POST", f"{self.url}/__emulator/orgs", body)[1]  # type: ignore[no-any-return]

    def orgs(self) -> list[dict[str, Any]]:
        """Every org this emulator serves (the main org first): org_id, name, url, users, records, main."""
        return http_json("GET", f"{self.url}/__emulator/orgs")[1]["orgs"]  # type: ignore[no-any-return]

    def requests(self, org_url: str | None = None, since: str | None = None) -> list[dict[str, Any]]:
        """Recent API requests of one org (the main org by default), tokens as fingerprints, at or after
        `since` (ISO 8601) when given."""
        query = "?" + urllib.parse.urlencode({"since": since}) if since else ""
        url = f"{org_url or self.url}/__emulator/requests{query}"
        return http_json("GET", url)[1]["requests"]  # type: ignore[no-any-return]

    # -- plain REST, as a person would (no Sforce-Call-Options)
    def token(self) -> str:
        """An access token for the integration user."""
        if self._token is None:
            _, body = http_json(
                "POST",
                f"{self.url}/services/oauth2/token",
                form={
                    "grant_type": "password",
                    "client_id": "local",
                    "client_secret": "local",
                    "username": "bridge@example.com",
                    "password": "emulator",
                },
            )
            self._token = body["access_token"]
        return self._token  # type: ignore[return-value]

    def forget_token(self) -> None:
        """Drop the cached access token (after the control API expired every session)."""
        self._token = None

    def create(self, sobject: str, fields: dict[str, Any]) -> str:
        """Create a record through REST; returns its id."""
        try:
            _, body = http_json(
                "POST",
                f"{self.url}/services/data/v60.0/sobjects/{sobject}/",
                fields,
                headers={"Authorization": f"Bearer {self.token()}"},
            )
        except HttpError as exc:
            if exc.status != 401:
                raise
            self._token = None
            return self.create(sobject, fields)
        return body["id"]  # type: ignore[no-any-return]


@dataclass
class SalesforceSeed:
    """Users and people created in the emulator for a scenario."""

    users: list[str] = field(default_factory=list)
    contacts: list[str] = field(default_factory=list)
    leads: list[str] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)


def seed_salesforce(
    emu: EmulatorProcess, users: int = 3, contacts: int = 3, leads: int = 2, accounts: int = 1
) -> SalesforceSeed:
    """Create Users, Accounts, Contacts and Leads through plain REST."""
    seed = SalesforceSeed()
    for i in range(users):
        tag = uuid.uuid4().hex[:8]
        seed.users.append(
            emu.create(
                "User",
                {
                    "LastName": f"Host{i}",
                    "Username": f"host{i}.{tag}@example.com",
                    "Email": f"host{i}.{tag}@example.com",
                },
            )
        )
    for i in range(accounts):
        seed.accounts.append(emu.create("Account", {"Name": f"Account {i}"}))
    for i in range(contacts):
        seed.contacts.append(emu.create("Contact", {"LastName": f"Contact{i}"}))
    for i in range(leads):
        seed.leads.append(emu.create("Lead", {"LastName": f"Lead{i}", "Company": "Acme"}))
    return seed


class Scheduler:
    """Writes to the scheduling database as the scheduler application would."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def execute(self, sql: str, params: Any = None) -> None:
        """One statement in its own transaction."""
        with self.conn.cursor() as cur:
            cur.execute(sql, params)

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of a scheduler table, as dicts (ids as strings)."""
        import psycopg2.extras

        assert table in ("users", "scheduling_links", "bookings")
        with self.conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(f"SELECT * FROM scheduler.{table}")  # noqa: S608 - table name checked above
            return [
                {k: (str(v) if k.endswith("id") and v is not None else v) for k, v in r.items()}
                for r in cur.fetchall()
            ]

    def add_user(self, salesforce_user_id: str | None) -> str:
        """A scheduler user; returns its id."""
        uid = str(uuid.uuid4())
        self.execute(
            "INSERT INTO scheduler.users (id, email, full_name, salesforce_user_id) VALUES (%s,%s,%s,%s)",
            (uid, f"u{uid[:8]}@example.com", "Private Person", salesforce_user_id),
        )
        return uid

    def add_link(
        self,
        link_type: str,
        owner_id: str,
        title: str = "Intro call",
        description: str | None = "Let's talk",
        duration: int = 30,
    ) -> str:
        """A scheduling link; returns its id."""
        lid = str(uuid.uuid4())
        self.execute(
            "INSERT INTO scheduler.scheduling_links (id, link_type, owner_id, title, description, "
            "duration_minutes) VALUES (%s,%s,%s,%s,%s,%s)",
            (lid, link_type, owner_id, title, description, duration),
        )
        return lid

    def add_booking(
        self,
        link_id: str,
        start: datetime | None = None,
        minutes: int = 30,
        related: str | None = None,
        assigned: str | None = None,
        status: str = "scheduled",
        booking_id: str | None = None,
    ) -> str:
        """A booking; returns its id."""
        bid = booking_id or str(uuid.uuid4())
        start = start or (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
        self.execute(
            "INSERT INTO scheduler.bookings (id, link_id, assigned_user_id, start_at, end_at, status, "
            "invitee_name, "
            "invitee_email, related_record_id) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (
                bid,
                link_id,
                assigned,
                start,
                start + timedelta(minutes=minutes),
                status,
                "Invitee Person",
                f"invitee.{bid[:8]}@example.org",
                related,
            ),
        )
        return bid


def write_config(
    path: Path,
    *,
    dsn: str,
    ledger_url: str,
    emulator_url: str,
    slot: str = "mogli_bridge",
    on_cancel: str = "delete",
    backfill: str = "since:2000-01-01",
    extra: str = "",
    admin_port: int | None = None,
    admin_token: str = "e2e-admin-token-value",
    auth: str = "password",
    salesforce_extra: str = "",
) -> Path:
    """A bridge config file for a local daemon (its admin API on a free port unless told one; `auth` and
    `salesforce_extra` lines for the `[salesforce]` table)."""
    admin_port = admin_port or free_port()
    path.write_text(f"""
[source]
dsn = "{dsn}"
slot = "{slot}"
publication = "{slot}"
backfill = "{backfill}"
status_interval_seconds = 0.5

[ledger]
url = "{ledger_url}"

[salesforce]
login_url = "{emulator_url}"
auth = "{auth}"
client_id = "e2e-client"
client_secret = "e2e-secret-value"
username = "bridge@example.com"
password = "emulator"
max_attempts = 4
request_timeout_seconds = 5.0
{salesforce_extra}
[sync]
on_cancel = "{on_cancel}"
retry_base_seconds = 0.2
retry_max_seconds = 2.0
idle_poll_seconds = 0.2
api_limit_wait_seconds = 2.0
streaming_stall_seconds = 5.0

[admin]
listen = "127.0.0.1:{admin_port}"
token = "{admin_token}"

[log]
format = "json"
{extra}
""")
    path.chmod(0o600)
    return path


def end_torn_line(log_path: Path) -> None:
    """End a log's last line when a kill cut it mid-write (a missing log is left alone)."""
    with contextlib.suppress(FileNotFoundError), log_path.open("rb+") as fh:
        if fh.seek(0, os.SEEK_END) > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")


class DaemonProcess:
    """`mogli-bridge run` in a subprocess, logging JSON lines to a file."""

    def __init__(
        self,
        config: Path,
        workdir: Path,
        name: str = "daemon",
        env: dict[str, str] | None = None,
        *,
        own_group: bool = False,
    ) -> None:
        self.config = config
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        # Extra environment (e.g. MOGLI_BRIDGE_* overrides) for the processes this object starts.
        self.env = {**os.environ, **env} if env else None
        self.own_group = own_group  # as EmulatorProcess's: signals to the parent's group pass it by

    def setup(self) -> subprocess.CompletedProcess[str]:
        """Run `mogli-bridge setup` once."""
        return subprocess.run(
            [sys.executable, "-m", "bridge", "--config", str(self.config), "setup"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
            env=self.env,
        )

    def start(self) -> None:
        """Start `run`, its log appended to the last run's (whose last line a kill may have cut mid-write:
        it is ended first, or the new run's first line would be glued to it and never read)."""
        end_torn_line(self.log_path)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "--config", str(self.config), "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=self.env,
            process_group=0 if self.own_group else None,
        )
        log.close()

    def wait_started(self, timeout: float = 30) -> None:
        """Wait until this run of the daemon has logged that it started (or is a standby)."""
        assert self.proc is not None
        pid = self.proc.pid

        def started() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc and self.proc.returncode}")
            return any(
                line.get("event") in ("daemon.started", "daemon.standby") and line.get("pid") == pid
                for line in self.log_lines()
            )

        wait_until(started, timeout=timeout, what="the daemon to start")

    def wait_active(self, timeout: float = 60) -> None:
        """Wait until this run of the daemon holds the ledger and works (`daemon.started`, not a standby)."""
        assert self.proc is not None
        pid = self.proc.pid

        def active() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc and self.proc.returncode}")
            return any(
                line.get("event") == "daemon.started" and line.get("pid") == pid for line in self.log_lines()
            )

        wait_until(active, timeout=timeout, what="the daemon to become active")

    def reconcile(self, *, dry_run: bool, allow_paused: bool = False, timeout: float = 300) -> dict[str, Any]:
        """`mogli-bridge reconcile --json` (through this daemon when it runs): the JSON it printed.
        AssertionError with the output unless it exits 0 with a finished run (or, when `allow_paused`, 1 with
        a run paused for the API budget)."""
        args = [sys.executable, "-m", "bridge", "--config", str(self.config), "reconcile", "--json"]
        out = subprocess.run(
            [*args, "--dry-run"] if dry_run else args,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=timeout,
            env=self.env,
        )
        tail = out.stdout[-2000:] + out.stderr[-2000:]
        expected = {0: "finished", 1: "paused"} if allow_paused else {0: "finished"}
        assert out.returncode in expected, f"reconcile exited {out.returncode}: {tail}"
        result: dict[str, Any] = json.loads(out.stdout)
        assert result["state"] == expected[out.returncode], f"exit {out.returncode}: {result['state']}"
        return result

    def kill9(self) -> None:
        """SIGKILL, as a crash would."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def log_lines(self) -> list[dict[str, Any]]:
        """Every JSON log line written so far."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    out.append(obj)
        return out


def ledger_activities(url: str) -> dict[str, dict[str, Any]]:
    """The ledger's activities by booking id."""
    import sqlalchemy as sa

    with ledger_connection(url) as conn:
        rows = conn.execute(sa.text("SELECT * FROM activities")).mappings().all()
    return {str(r["booking_id"]): dict(r) for r in rows}


def check_invariants(
    emulator: EmulatorProcess,
    scheduler: Scheduler,
    ledger_url: str | None,
    on_cancel: str = "delete",
    failed_ok: frozenset[str] = frozenset(),
) -> list[Any]:
    """Compare the scheduler, the org and the ledger; returns the differences (empty when they agree)."""
    from bridge.devtools.invariants import check

    return check(
        bookings=scheduler.rows("bookings"),
        links={r["id"]: r for r in scheduler.rows("scheduling_links")},
        users={r["id"]: r for r in scheduler.rows("users")},
        events=emulator.records("Event"),
        mogli_events=emulator.records("Mogli_Event__c"),
        ledger_activities=ledger_activities(ledger_url) if ledger_url else None,
        on_cancel=on_cancel,
        failed_ok=failed_ok,
    )


def count_damage(
    emulator: EmulatorProcess,
    scheduler: Scheduler,
    on_cancel: str = "delete",
    failed_ok: frozenset[str] = frozenset(),
) -> Tally:
    """Count lost bookings and doubled Events from the org's live records."""
    return tally(
        bookings=scheduler.rows("bookings"),
        events=emulator.records("Event"),
        mogli_events=emulator.records("Mogli_Event__c"),
        on_cancel=on_cancel,
        failed_ok=failed_ok,
    )


@contextlib.contextmanager
def ledger_connection(url: str) -> Iterator[Any]:
    """A SQLAlchemy connection to the ledger, for assertions."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()
