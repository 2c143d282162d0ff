"""One row per org, as `mogli-bridge orgs`, `GET /api/orgs` and the status page show it (CONTRACT §9).

Read from the ledger alone (the `orgs` table, counts by org, stream positions by org), so it answers with
or without a running daemon.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.admin.ports import OrgCountsView, OrgLedger
from bridge.records.ledger import DEFAULT_ORG, OrgRecord, OrgState

COLUMNS = (
    "org_id", "name", "state", "reason", "pending", "failed", "api_used", "api_limit", "positions", "worker",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class OrgRow:
    """An org's state, reason, queue, API budget and change-event positions."""

    org_id: str
    name: str | None
    state: str
    reason: str | None
    pending: int
    failed: int
    api_used: int | None
    api_limit: int | None
    positions: Mapping[str, str] = field(default_factory=dict)  # channel -> replay position
    worker: str | None = None  # the worker holding its lease (CONTRACT §10); None without worker mode


def org_key(org_id: str | None) -> str:
    """The org id as rows name it: DEFAULT_ORG for the default org (NULL in the ledger's other tables)."""
    return DEFAULT_ORG if org_id in (None, "", DEFAULT_ORG) else str(org_id)


def ledger_org(org_id: str) -> str | None:
    """The org id as `Ledger.scoped` takes it: None for the default org."""
    return None if org_id == DEFAULT_ORG else org_id


def org_row(
    org: OrgRecord,
    counts: Mapping[str, OrgCountsView],
    positions: Mapping[str, Mapping[str, str]],
    workers: Mapping[str, str | None] | None = None,
) -> OrgRow:
    """One org's row from its record, the counts, positions and workers by org."""
    key = org_key(org.org_id)
    tally = counts.get(key)
    return OrgRow(
        org_id=key,
        name=org.name,
        state=str(org.state),
        reason=org.reason,
        pending=tally.pending if tally is not None else 0,
        failed=tally.failed if tally is not None else 0,
        api_used=org.api_used,
        api_limit=org.api_limit,
        positions=dict(sorted(positions.get(key, {}).items())),
        worker=(workers or {}).get(key),
    )


async def org_rows(ledger: OrgLedger) -> list[OrgRow]:
    """Every org's row, the default org first, then by name and id."""
    orgs = await ledger.list_orgs()
    counts = await ledger.org_counts()
    positions = await ledger.org_positions()
    workers = await ledger.org_workers()
    rows = [org_row(org, counts, positions, workers) for org in orgs]
    return sorted(rows, key=lambda r: (r.org_id != DEFAULT_ORG, r.name or "", r.org_id))


def row_json(row: OrgRow) -> dict[str, Any]:
    """The row as JSON: every column, positions whole."""
    return {c: (dict(row.positions) if c == "positions" else getattr(row, c)) for c in COLUMNS}


def short_positions(positions: Mapping[str, str]) -> str:
    """Positions for a narrow table cell: each channel's last name and its position."""
    return ", ".join(f"{channel.rstrip('/').rsplit('/', 1)[-1]} {p}" for channel, p in positions.items())


def state_summary(rows: list[OrgRow]) -> str:
    """How many orgs are active, paused and disconnected, and why the paused ones are paused."""
    by_state: dict[str, list[OrgRow]] = {}
    for row in rows:
        by_state.setdefault(row.state, []).append(row)
    known = [s.value for s in OrgState]
    parts = [f"{len(by_state.get(s, [])):,} {s}" for s in known]
    parts += [f"{len(v):,} {s}" for s, v in sorted(by_state.items()) if s not in known]
    text = ", ".join(parts)
    reasons = [f"{r.org_id}: {r.reason or 'no reason recorded'}" for r in by_state.get("paused", [])]
    return text + (f" (paused: {'; '.join(reasons)})" if reasons else "")


async def org_detail(ledger: OrgLedger, org_id: str, failures: int = 20) -> dict[str, Any] | None:
    """`GET /api/orgs/{id}`: the org's row, its counts by state, its positions and its recent failures
    (ids and codes); None for an org the ledger does not know."""
    record = await ledger.get_org(org_id)
    if record is None:
        return None
    row = org_row(record, await ledger.org_counts(), await ledger.org_positions(), await ledger.org_workers())
    scoped = ledger.scoped(ledger_org(row.org_id))
    recent = await scoped.list_failures(limit=failures)
    return {
        **row_json(row),
        "salesforce_org_id": record.salesforce_org_id,
        "instance_url": record.instance_url,
        "connection": record.connection,
        "state_since": record.state_since,
        "updated_at": record.updated_at,
        "counts": await scoped.counts(),
        "recent_failures": [
            {
                "entity": f.entity,
                "key": f.key,
                "link_id": f.link_id,
                "error_code": f.error_code,
                "last_error": f.last_error,
                "attempts": f.attempts,
                "updated_at": f.updated_at,
            }
            for f in recent
        ],
    }
