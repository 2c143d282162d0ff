"""The `orgs` table: each org's state and reason, identity and API use, and figures by org.

These operations see every org whatever the repository's scope (they name the org they concern). The
`orgs` table keys the default org of `[salesforce]` as DEFAULT_ORG; the other tables hold it as NULL.
Migration 0004 writes the default org's row; a write for the default org recreates it if it is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, func, insert, select, update

from bridge.ledger.scope import SOURCE_STREAMS, ledger_org, org_key, split_stream
from bridge.ledger.tables import ACTIVITIES, CHECKPOINTS, JOURNAL, LINKS, ORGS
from bridge.ledger.workset import insert_many
from bridge.records.ledger import DEFAULT_ORG, Direction, OrgRecord, OrgState

_RECORD_COLUMNS = tuple(f.name for f in fields(OrgRecord))


@dataclass(frozen=True, slots=True)
class OrgCounts:
    """One org's links and activities by state: waiting to be written, failed, written."""

    pending: int = 0
    failed: int = 0
    synced: int = 0


def _record(m: Any) -> OrgRecord:
    return OrgRecord(**{c: m[c] for c in _RECORD_COLUMNS})


def list_orgs(connection: Connection) -> list[OrgRecord]:
    """Every `orgs` row: the default org first, then by org id."""
    query = select(ORGS).order_by((ORGS.c.org_id != DEFAULT_ORG), ORGS.c.org_id)
    return [_record(m) for m in connection.execute(query).mappings()]


def get_org(connection: Connection, org_id: str) -> OrgRecord | None:
    """One org's row, or None."""
    m = connection.execute(select(ORGS).where(ORGS.c.org_id == org_id)).mappings().first()
    return _record(m) if m is not None else None


def _ensure_default(connection: Connection, org_id: str, now: datetime) -> None:
    """Write the default org's row when a write names it and it is missing (an active org)."""
    if org_id != DEFAULT_ORG or get_org(connection, DEFAULT_ORG) is not None:
        return
    values = {"org_id": DEFAULT_ORG, "state": OrgState.ACTIVE.value, "state_since": now, "updated_at": now}
    connection.execute(insert(ORGS).values(values))


def set_state(
    connection: Connection, org_id: str, state: OrgState, reason: str | None, now: datetime
) -> bool:
    """Move an org to `state` with `reason`; True when the state or the reason changed (then journaled).

    `state_since` moves only with the state; an unknown org (other than the default one) changes nothing.
    """
    _ensure_default(connection, org_id, now)
    current = get_org(connection, org_id)
    if current is None or (current.state == state.value and current.reason == reason):
        return False
    values: dict[str, Any] = {"state": state.value, "reason": reason, "updated_at": now}
    if current.state != state.value:
        values["state_since"] = now
    connection.execute(update(ORGS).where(ORGS.c.org_id == org_id).values(values))
    # Written as a row, not through append_journal: the entry is the named org's whatever the scope.
    entry = {
        "at": now,
        "org_id": ledger_org(org_id),
        "direction": Direction.ADMIN.value,
        "entity": "org",
        "entity_key": org_id,
        "action": f"org.{state.value}",
        "detail": {"from": current.state, "reason": reason},
    }
    insert_many(connection, JOURNAL, [entry])
    return True


def record_identity(
    connection: Connection, org_id: str, salesforce_org_id: str, instance_url: str, now: datetime
) -> None:
    """Store the org's 00D id and instance URL (as its token named them)."""
    _ensure_default(connection, org_id, now)
    values = {"salesforce_org_id": salesforce_org_id, "instance_url": instance_url, "updated_at": now}
    connection.execute(update(ORGS).where(ORGS.c.org_id == org_id).values(values))


def record_api(connection: Connection, org_id: str, used: int, limit: int, now: datetime) -> None:
    """Store the org's daily API requests used and allowed."""
    _ensure_default(connection, org_id, now)
    values = {"api_used": used, "api_limit": limit, "updated_at": now}
    connection.execute(update(ORGS).where(ORGS.c.org_id == org_id).values(values))


def org_counts(connection: Connection) -> dict[str, OrgCounts]:
    """Pending, failed and synced links plus activities by org key: every `orgs` row (zeros included) and
    every org that has rows; one grouped query per table."""
    tally: dict[str, dict[str, int]] = {k: {} for (k,) in connection.execute(select(ORGS.c.org_id))}
    for table in (LINKS, ACTIVITIES):
        for org_id, state, count in connection.execute(_by_org_and_state(table)):
            states = tally.setdefault(org_key(org_id), {})
            states[state] = states.get(state, 0) + int(count)
    return {
        key: OrgCounts(**{name: states.get(name, 0) for name in ("pending", "failed", "synced")})
        for key, states in tally.items()
    }


def _by_org_and_state(table: Table) -> Any:
    return select(table.c.org_id, table.c.state, func.count()).group_by(table.c.org_id, table.c.state)


def org_positions(connection: Connection) -> dict[str, dict[str, str]]:
    """Change-event positions by org key, then bare channel name (the global source positions left out)."""
    positions: dict[str, dict[str, str]] = {}
    for stream, position in connection.execute(select(CHECKPOINTS.c.stream, CHECKPOINTS.c.position)):
        if stream in SOURCE_STREAMS:
            continue
        org_id, channel = split_stream(str(stream))
        positions.setdefault(org_key(org_id), {})[channel] = str(position)
    return positions
