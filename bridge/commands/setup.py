"""`mogli-bridge setup`: migrate the ledger, prepare the source (publication, slot), check Salesforce.

Every step reports a Check; setup is safe to run again, and writes nothing to a ledger a running daemon
holds.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.config import Settings, redacted_url, require_salesforce_credentials
from bridge.errors import BridgeError, ConfigurationError
from bridge.ledger.lock import InstanceLock

if TYPE_CHECKING:
    from bridge.salesforce.auth import TokenManager
    from bridge.salesforce.rest import SalesforceClient


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Dispatch from the command line."""
    return setup(
        settings,
        create_demo_schema=args.create_demo_schema,
        reset_source=args.reset_source,
        check_salesforce=not args.skip_salesforce,
    )


SCHEMA_SQL = Path(__file__).parents[1] / "schema" / "scheduler_schema.sql"


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the `setup` report."""

    component: str
    ok: bool
    message: str


def _ledger_checks(settings: Settings, reset_source: bool) -> list[Check]:
    """Migrate the ledger (and forget the source position), only while no daemon holds it."""
    lock = InstanceLock(settings.ledger.url)
    if not lock.try_acquire():
        return _ledger_checks_behind_daemon(settings, reset_source)
    try:
        return _ledger_writes(settings, reset_source)
    finally:
        lock.release()


def _ledger_checks_behind_daemon(settings: Settings, reset_source: bool) -> list[Check]:
    """A running daemon holds the ledger: report its schema, write nothing."""
    from bridge.ledger.migrate import current_revision, head_revision

    holder = "a running mogli-bridge daemon holds the ledger"
    revision = current_revision(settings.ledger.url)
    if revision != head_revision():
        checks = [Check("ledger", False, f"{holder}; stop it, then run setup to migrate (at {revision})")]
    else:
        checks = [Check("ledger", True, f"at revision {revision} ({holder})")]
    if reset_source:
        checks.append(Check("ledger", False, f"{holder}; stop it before --reset-source"))
    return checks


def _ledger_writes(settings: Settings, reset_source: bool) -> list[Check]:
    from bridge.ledger import checkpoints
    from bridge.ledger.migrate import upgrade_to_head
    from bridge.ledger.repository import Ledger

    revision = upgrade_to_head(settings.ledger.url)
    checks = [Check("ledger", True, f"migrated to revision {revision} ({redacted_url(settings.ledger.url)})")]
    if reset_source:
        ledger = Ledger.from_url(settings.ledger.url)
        try:
            ledger.call(checkpoints.forget_source_position, ledger.now())
        finally:
            ledger.dispose()
        checks.append(Check("ledger", True, "source position forgotten: the next run re-reads the tables"))
    return checks


def _source_checks(settings: Settings, create_demo_schema: bool, reset_source: bool) -> list[Check]:
    from bridge.source.setup import check_source, drop_slot, ensure_publication, ensure_slot

    src = settings.source
    checks: list[Check] = []
    if create_demo_schema:
        created = _create_demo_schema(src.dsn, src.schema)
        checks.append(
            Check("source", True, "reference schema created" if created else "schema already present")
        )
    if reset_source and drop_slot(src.dsn, src.slot):
        checks.append(Check("source", True, f"replication slot {src.slot} dropped"))
    pub = ensure_publication(src.dsn, src.schema, src.publication, tenancy=settings.tenancy.enabled)
    checks.append(Check("source", True, f"publication {src.publication} {'created' if pub else 'present'}"))
    slot = ensure_slot(src.dsn, src.slot)
    checks.append(Check("source", True, f"replication slot {src.slot} {'created' if slot else 'present'}"))
    report = check_source(src.dsn, src.schema, src.slot, src.publication, tenancy=settings.tenancy.enabled)
    checks.extend(Check("source", False, problem) for problem in report.problems)
    if settings.sync.streaming:
        from bridge.source.writeback import check_origin

        checks.append(Check("source", *check_origin(src.dsn)))
    return checks


def _create_demo_schema(dsn: str, schema: str) -> bool:
    import psycopg2

    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = 'bookings'",
                (schema,),
            )
            if cur.fetchone():
                return False
            cur.execute(
                SCHEMA_SQL.read_text()
                .replace("scheduler.", f"{schema}.")
                .replace("SCHEMA IF NOT EXISTS scheduler", f"SCHEMA IF NOT EXISTS {schema}")
            )
        conn.commit()
        return True
    finally:
        conn.close()


async def _salesforce_checks(settings: Settings) -> list[Check]:
    from bridge.app import salesforce_client

    sf = settings.salesforce
    require_salesforce_credentials(sf)
    async with salesforce_client(settings) as (tokens, client):
        await tokens.get()
        checks = [Check("salesforce", True, f"logged in ({sf.auth}) at {sf.login_url}")]
        names = sf.objects
        wanted = {
            names.mogli_event_object: (
                names.link_external_id_field,
                names.link_type_field,
                names.mogli_description_field,
            ),
            "Event": (names.booking_external_id_field, names.event_mogli_event_field),
        }
        for sobject, fields in wanted.items():
            try:
                desc = await client.describe(sobject)
            except BridgeError as exc:
                checks.append(Check("salesforce", False, f"object {sobject}: {exc}"))
                continue
            missing = [f for f in fields if f.lower() not in {n.lower() for n in desc.fields}]
            if missing:
                checks.append(
                    Check(
                        "salesforce",
                        False,
                        f"object {sobject} lacks fields {', '.join(missing)} "
                        "(salesforce.objects.* names them)",
                    )
                )
            else:
                checks.append(Check("salesforce", True, f"object {sobject} and its fields present"))
        if settings.sync.streaming and settings.sync.channel != "standard":
            checks.append(await _channel_check(settings, client, tokens))
        return checks


async def _channel_check(settings: Settings, client: SalesforceClient, tokens: TokenManager) -> Check:
    """Create or update the filtered custom channel; under `auto` a refusal only means standard channels."""
    from bridge.salesforce.channels import ensure_channel

    sf, sync = settings.salesforce, settings.sync
    fallback = sync.channel == "auto"
    user = await tokens.user_id()
    if user is None:
        return Check("salesforce", fallback, "custom channel: the token response names no user (no `id` URL)")
    try:
        done = await ensure_channel(client, sf.objects, sync.channel_name, user)
    except BridgeError as exc:
        if fallback:
            return Check(
                "salesforce",
                True,
                f"custom channel {sync.channel_name} refused ({exc}); the daemon uses the standard channels "
                "(sync.channel = auto)",
            )
        return Check("salesforce", False, f"custom channel {sync.channel_name} refused: {exc} (sync.channel)")
    return Check("salesforce", True, f"custom channel {sync.channel_name}: {'; '.join(done)}")


def setup(
    settings: Settings,
    *,
    create_demo_schema: bool = False,
    reset_source: bool = False,
    check_salesforce: bool = True,
) -> int:
    """`mogli-bridge setup`: idempotent preparation of ledger, source and Salesforce; prints a report."""
    checks: list[Check] = []
    steps: tuple[tuple[str, Callable[[], list[Check]]], ...] = (
        ("ledger", lambda: _ledger_checks(settings, reset_source)),
        ("source", lambda: _source_checks(settings, create_demo_schema, reset_source)),
    )
    for name, step in steps:
        try:
            checks.extend(step())
        except ConfigurationError:
            raise
        except Exception as exc:
            checks.append(Check(name, False, f"{type(exc).__name__}: {exc}"))
    if check_salesforce:
        try:
            checks.extend(asyncio.run(_salesforce_checks(settings)))
        except ConfigurationError as exc:
            checks.append(Check("salesforce", False, str(exc)))
        except Exception as exc:
            checks.append(Check("salesforce", False, f"{type(exc).__name__}: {exc}"))
    for check in checks:
        print(f"{'ok ' if check.ok else 'NOT'}  {check.component:<10} {check.message}")
    ready = all(c.ok for c in checks)
    print("ready" if ready else "not ready: fix the lines marked NOT and run setup again")
    return 0 if ready else 1
