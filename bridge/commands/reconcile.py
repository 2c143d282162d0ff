"""`mogli-bridge reconcile`: through the running daemon's admin API, else in-process under the ledger lock.

Never two writers: when the admin API answers, the daemon runs the reconciliation and this process only
polls it. When it does not answer, this process takes the ledger's InstanceLock (so no daemon can become
active meanwhile) and runs the Reconciler itself, then pushes the rows it requeued through the ordinary
Pusher. A lock held by a process whose admin API does not answer (after --wait-for-daemon seconds, for a
daemon that is still starting) is refused with a message.

With `--org ID` both ways are restricted to that org: the daemon is asked for a run of that org (`orgs` in
the body), and in-process the ledger is scoped to it and Salesforce reached with the org's settings.

A little over 400 lines: the two ways a run goes and the one output they share read best together (the
progress bar already lives in commands/progress.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from rich.console import Console
from rich.table import Table

from bridge.admin.client import AdminClient, DaemonAbsent, DaemonSilent, reason
from bridge.commands.checks import UsageError, in_org, require_org, require_setup
from bridge.commands.progress import ProgressBar
from bridge.commands.tables import ID_NOTE, Column, build
from bridge.config import Settings
from bridge.errors import ApiLimitExhausted, ConfigurationError
from bridge.pipeline.reconcile import ReconcileOptions, ReconcileSummary
from bridge.records.ledger import DriftItem

if TYPE_CHECKING:
    from bridge.ledger.repository import Ledger

log = structlog.get_logger(__name__)

POLL_SECONDS = 0.5
ADMIN_ANSWER_SECONDS = 120.0  # a busy daemon queues the request behind its ledger work; wait for it
DRAIN_ROUNDS = 1_000  # push rounds after a repair; each round handles up to sync.batch_size rows
TABLE_ITEMS = 200  # items listed under the table; --json has them all
ITEM_COLUMNS = (
    Column("kind", max_width=24),
    Column("link", "uuid"),
    Column("booking", "uuid"),
    Column("salesforce id", "sfid"),
    Column("repaired"),
    Column("detail", "text", 60),
)  # one line per drift item
_FLAGS = {
    "changed_since": "--changed-since",
    "changed_until": "--changed-until",
    "since": "--since",
    "until": "--until",
    "links": "--link",
    "bookings": "--booking",
}


class DaemonRefused(Exception):
    """The daemon's admin API answered but would not run the reconciliation."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """A finished (or paused) run and its drift items, however it ran."""

    run_id: int
    state: str
    dry_run: bool
    counts: dict[str, int]
    repaired: int
    message: str | None
    items: tuple[DriftItem, ...]
    via: str  # 'daemon' | 'in-process'


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Dispatch from the command line."""
    return run_reconcile(
        settings,
        links=args.link,
        bookings=args.booking,
        since=args.since,
        until=args.until,
        changed_since=args.changed_since,
        changed_until=args.changed_until,
        dry_run=args.dry_run,
        as_json=args.json,
        wait_for_daemon=args.wait_for_daemon,
        org=args.org,
    )


def parse_when(value: str | datetime | None, key: str) -> datetime | None:
    """An ISO date or datetime (naive means UTC); ValueError names the option."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"--{key}: {value!r} is not an ISO date or datetime") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def run_reconcile(
    settings: Settings,
    *,
    links: Sequence[str] | None,
    bookings: Sequence[str] | None,
    since: str | datetime | None,
    until: str | datetime | None,
    dry_run: bool,
    as_json: bool,
    changed_since: str | datetime | None = None,
    changed_until: str | datetime | None = None,
    wait_for_daemon: float = 60.0,
    org: str | None = None,
) -> int:
    """The `reconcile` command (in `org` alone when given); returns the exit code (0 done, 1 paused or
    failed, 2 usage)."""
    console = Console(stderr=True)
    if org is not None:
        require_setup(settings)
        require_org(settings, org)
    try:
        options = ReconcileOptions(
            links=tuple(links or ()),
            bookings=tuple(bookings or ()),
            since=parse_when(since, "since"),
            until=parse_when(until, "until"),
            dry_run=dry_run,
            changed_since=parse_when(changed_since, "changed-since"),
            changed_until=parse_when(changed_until, "changed-until"),
        )
    except ValueError as exc:
        console.print(f"error: {_as_flags(str(exc))}")
        return 2
    try:
        outcome = _run_somewhere(settings, Scope(options, org), as_json, console, wait_for_daemon)
    except DaemonRefused as exc:
        console.print(f"error: {exc}")
        return 1
    if outcome is None:
        return 1
    if as_json:
        print(json.dumps(outcome_json(outcome), indent=2, default=str))
    else:
        print_table(outcome, Console())
    if outcome.message:
        console.print(outcome.message)
    return 0 if outcome.state == "finished" else 1


@dataclass(frozen=True, slots=True)
class Scope:
    """What to reconcile: the options, and the org (None: the ledger without --org)."""

    options: ReconcileOptions
    org: str | None = None


def _run_somewhere(
    settings: Settings, scope: Scope, as_json: bool, console: Console, wait: float
) -> Outcome | None:
    """Through the daemon, else in-process; a daemon that holds the lock but has not bound its admin API yet
    (it binds last when it starts) is waited for up to `wait` seconds."""
    deadline = time.monotonic() + max(wait, 0.0)
    waiting = False
    while True:
        outcome = _via_daemon(settings, scope, as_json, console)
        if outcome is not None:
            return outcome
        outcome, held = _in_process(settings, scope, as_json, console)
        if not held:
            return outcome
        if time.monotonic() >= deadline:
            console.print(
                f"error: another mogli-bridge process owns the ledger, but its admin API at "
                f"http://{settings.admin.listen} has not answered for {wait:.0f} s; "
                "check admin.listen, or wait for it to stop"
            )
            return None
        if not waiting:
            console.print("another mogli-bridge process owns the ledger; waiting for its admin API to answer")
            waiting = True
        time.sleep(1.0)


def _as_flags(message: str) -> str:
    """An options error in the command's words (`changed_since` -> `--changed-since`)."""
    for name, flag in _FLAGS.items():
        message = re.sub(rf"(?<![-\w]){name}\b", flag, message)
    return message


# ---------------------------------------------------------------------------------------- via the daemon


def _via_daemon(settings: Settings, scope: Scope, as_json: bool, console: Console) -> Outcome | None:
    """Ask the running daemon; None when its admin API does not answer."""
    options = scope.options
    body: dict[str, Any] = {
        "links": list(options.links),
        "bookings": list(options.bookings),
        "since": options.since.isoformat() if options.since else None,
        "until": options.until.isoformat() if options.until else None,
        "changed_since": options.changed_since.isoformat() if options.changed_since else None,
        "changed_until": options.changed_until.isoformat() if options.changed_until else None,
        "dry_run": options.dry_run,
    }
    if scope.org is not None:
        body["orgs"] = [scope.org]
    client = AdminClient(settings.admin, answer_seconds=ADMIN_ANSWER_SECONDS)
    try:
        reply = client.call("POST", "/api/reconciliations", body)
    except DaemonAbsent:
        return None
    except DaemonSilent as exc:
        raise DaemonRefused(f"{exc}; see its status page before trying again") from None
    if reply.status != 202:
        raise DaemonRefused(
            f"the daemon's admin API refused the reconciliation (HTTP {reply.status}): {reason(reply.body)}"
        )
    started = reply.body
    run_id = int(started["id"])
    console.print(f"reconciliation run {run_id} started by the running daemon")
    with ProgressBar(console, enabled=console.is_terminal and not as_json) as report:
        run = _poll(client, run_id, report)
    summary = run.get("summary") or {}
    return Outcome(
        run_id=run_id,
        state=str(run.get("state")),
        dry_run=bool(run.get("dry_run")),
        counts=dict(summary.get("counts") or {}),
        repaired=int(summary.get("repaired") or 0),
        message=summary.get("message"),
        items=tuple(_drift_items(settings, run_id)),
        via="daemon",
    )


def _poll(client: AdminClient, run_id: int, report: Callable[[str, int, int], None] | None) -> dict[str, Any]:
    """The daemon's run row once it is no longer running, its stored progress shown meanwhile."""
    while True:
        try:
            run = client.call("GET", f"/api/reconciliations/{run_id}").body
        except (DaemonAbsent, DaemonSilent) as exc:
            raise DaemonRefused(f"lost the daemon while polling run {run_id}: {exc}") from None
        if report is not None:
            summary = run.get("summary") or {}
            # the daemon stores progress per chunk: how many were checked, not how many there are
            report("links checked", int(summary.get("links_checked") or 0), 0)
            report("bookings checked", int(summary.get("bookings_checked") or 0), 0)
            report("drift found", int(summary.get("total") or 0), 0)
        if run.get("state") != "running":
            return dict(run)
        time.sleep(POLL_SECONDS)


def _drift_items(settings: Settings, run_id: int) -> list[DriftItem]:
    """The run's drift items, oldest first (a read-only ledger query)."""
    from bridge.ledger import runs
    from bridge.ledger.repository import Ledger

    ledger = Ledger.from_url(settings.ledger.url)
    try:
        return list(reversed(ledger.call_read(runs.list_drift, run_id=run_id, limit=10_000_000)))
    finally:
        ledger.dispose()


# ---------------------------------------------------------------------------------------- in-process


def _in_process(
    settings: Settings, scope: Scope, as_json: bool, console: Console
) -> tuple[Outcome | None, bool]:
    """Run under the ledger lock: (the outcome, False); (None, True) when another process holds it."""
    from bridge.ledger.lock import InstanceLock
    from bridge.ledger.migrate import current_revision, head_revision

    if current_revision(settings.ledger.url) != head_revision():
        raise ConfigurationError(
            "the ledger is not at the current schema: run `mogli-bridge setup` first", "ledger.url"
        )
    lock = InstanceLock(settings.ledger.url)
    if not lock.try_acquire():
        return None, True
    try:
        with ProgressBar(console, enabled=console.is_terminal and not as_json) as report:
            summary = asyncio.run(_execute(settings, scope, report))
    finally:
        lock.release()
    outcome = Outcome(
        run_id=summary.run_id,
        state=summary.state,
        dry_run=summary.dry_run,
        counts=summary.counts,
        repaired=summary.repaired,
        message=summary.message,
        items=tuple(_drift_items(settings, summary.run_id)),
        via="in-process",
    )
    return outcome, False


async def _execute(
    settings: Settings, scope: Scope, report: Callable[[str, int, int], None] | None
) -> ReconcileSummary:
    from bridge.app import build_pusher, build_reconciler, salesforce_client
    from bridge.ledger.repository import Ledger, utc_now

    options = scope.options
    base = Ledger.from_url(settings.ledger.url)
    ledger = in_org(base, scope.org)
    try:
        settings = await settings_for_org(settings, base, scope.org)
        async with salesforce_client(settings) as (_, client):
            pusher = build_pusher(settings, ledger, client, utc_now)
            reconciler = build_reconciler(
                settings, ledger, client, after_repair=_drainer(pusher.push_once), progress=report
            )
            run_id = await reconciler.start(options)
            return await reconciler.execute(run_id, options)
    finally:
        await base.close()


async def settings_for_org(settings: Settings, ledger: Ledger, org: str | None) -> Settings:
    """The settings whose [salesforce] reaches `org` (the settings themselves without --org)."""
    if org is None:
        return settings
    from bridge.tenancy.connect import org_settings

    record = await ledger.get_org(org)
    if record is None:
        raise UsageError(f"the ledger knows no org {org!r} (`mogli-bridge orgs` lists every org)")
    return org_settings(settings, record)


def _drainer(push_once: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[None]]:
    """Push until nothing is due; a spent API budget leaves the rest queued for the daemon."""

    async def drain() -> None:
        try:
            for _ in range(DRAIN_ROUNDS):
                if not await push_once():
                    return
        except ApiLimitExhausted as exc:
            log.warning("reconcile.push_paused", reason=str(exc))

    return drain


# ---------------------------------------------------------------------------------------- output


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    """The --json document: run id, state, counts by kind, and every item."""
    return {
        "run_id": outcome.run_id,
        "state": outcome.state,
        "dry_run": outcome.dry_run,
        "via": outcome.via,
        "total": sum(outcome.counts.values()),
        "repaired": outcome.repaired,
        "counts": dict(sorted(outcome.counts.items())),
        "message": outcome.message,
        "items": [
            {k: v for k, v in asdict(item).items() if k not in ("run_id", "id")} for item in outcome.items
        ],
    }


def print_table(outcome: Outcome, console: Console) -> None:
    """Drift by kind, then the items (ids and fields, never personal data)."""
    mode = "dry run" if outcome.dry_run else "repair"
    title = f"Reconciliation run {outcome.run_id} ({mode}, {outcome.via}): {outcome.state}"
    table = Table(title=title)
    for column in ("kind", "found", "repaired"):
        table.add_column(column)
    for kind, count in sorted(outcome.counts.items()):
        fixed = sum(1 for i in outcome.items if i.kind == kind and i.repaired)
        table.add_row(kind, str(count), str(fixed))
    table.add_row("total", str(sum(outcome.counts.values())), str(outcome.repaired))
    console.print(table)
    if not outcome.items:
        return
    rows = [
        {
            "kind": item.kind,
            "link": item.link_id,
            "booking": item.booking_id,
            "salesforce id": item.salesforce_id,
            "repaired": "yes" if item.repaired else "",
            "detail": json.dumps({k: v for k, v in item.detail.items() if k != "repair"}, default=str),
        }
        for item in outcome.items[:TABLE_ITEMS]
    ]
    console.print(build("Drift", ITEM_COLUMNS, rows, width=console.width, wide=False))
    console.print(f"{ID_NOTE}; --json has every item in full", markup=False, highlight=False)
    if len(outcome.items) > TABLE_ITEMS:
        console.print(f"... and {len(outcome.items) - TABLE_ITEMS:,} more items: use --json for all of them")
