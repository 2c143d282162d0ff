"""The one gate every outcome-recording transaction passes before it changes a row.

Today it keeps a scoped ledger's outcomes to its org's rows (defence in depth: a pusher only claims its own
org's rows); a worker's lease or fencing-token check (issue 14) belongs here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import structlog
from sqlalchemy import Connection, Table, select

from bridge.ledger.scope import org_key, scope_of
from bridge.ledger.workset import chunked
from bridge.records.outbound import ActivityOutcome, LinkOutcome

log = structlog.get_logger(__name__)

_Outcome = TypeVar("_Outcome", LinkOutcome, ActivityOutcome)


def admitted(
    connection: Connection, table: Table, key: str, outcomes: Sequence[_Outcome]
) -> tuple[list[_Outcome], dict[str, str | None]]:
    """The outcomes this transaction may record, and the org_id of the row each names (for its journal).

    The one gate every recording transaction passes (a lease or fencing check belongs here too). In a scoped
    ledger an outcome for a row of another org changes nothing and is logged as an error with the ids; one
    for a row the ledger does not hold passes (its updates match nothing; its journal entry stays). The
    unscoped ledger admits everything without a read (the single-org daemon: every row is the default org's).
    """
    scope = scope_of(connection)
    ids = sorted({getattr(o, key) for o in outcomes})
    orgs: dict[str, str | None] = dict.fromkeys(ids, scope.written_org())
    if scope.every:
        return list(outcomes), orgs
    for part in chunked(ids):
        query = select(table.c[key], table.c.org_id).where(table.c[key].in_(part))
        orgs.update({k: org for k, org in connection.execute(query)})
    foreign = sorted(k for k, org in orgs.items() if not scope.holds(org))
    if not foreign:
        return list(outcomes), orgs
    log.error(
        "ledger.outcome_outside_scope",
        entity=table.name,
        scope=scope.key,
        ids=foreign,
        orgs=sorted({org_key(orgs[k]) for k in foreign}),
    )
    refused = set(foreign)
    return [o for o in outcomes if getattr(o, key) not in refused], orgs
