"""Which org's rows a ledger transaction sees: every org (the unscoped ledger) or one.

`Ledger.scoped(org)` puts an `OrgScope` on each connection it opens (as an execution option), and every
topic function narrows its statements with `scope_of(connection)`: one declaration per operation still, and
a synchronous caller's `Ledger.call(fn, ...)` on a scoped ledger is scoped the same way.

In the ledger tables the default org of `[salesforce]` is org_id NULL (`IS NULL`, never `= NULL`); only the
`orgs` table names it DEFAULT_ORG. Checkpoints of a channel are per org: the default org keeps the bare
channel name, another org's is 'org/<org_id>/<channel>'; the source's position ('source') is global.

Several workers (issue 14): a scope may carry a `Fence` (this worker's lease of the org at an epoch); every
write transaction of such a scope first checks it (bridge/ledger/workers.py `check_fence`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, Table, exists, select, true

from bridge.ledger.tables import ORGS
from bridge.records.ledger import (
    DEFAULT_ORG,
    SOURCE_AHEAD_STREAM,
    SOURCE_STREAM,
    SOURCE_STREAMS,
    Fence,
    OrgState,
)

# The execution option that carries the scope on a connection.
ORG_SCOPE = "ledger_org_scope"
ORG_STREAM_PREFIX = "org/"

__all__ = [
    "EVERY_ORG",
    "ORG_SCOPE",
    "SOURCE_AHEAD_STREAM",
    "SOURCE_STREAM",
    "SOURCE_STREAMS",
    "OrgScope",
    "ledger_org",
    "org_key",
    "org_stream",
    "scope_of",
    "split_stream",
]


def ledger_org(org_id: str | None) -> str | None:
    """The org_id the ledger tables hold for an org: NULL (None) for the default org."""
    return None if org_id in (None, DEFAULT_ORG) else org_id


def org_key(org_id: str | None) -> str:
    """The `orgs` table's key of an org: DEFAULT_ORG for the default org (NULL in the other tables)."""
    return DEFAULT_ORG if org_id is None else org_id


def org_stream(org_id: str | None, channel: str) -> str:
    """The checkpoint stream of an org's channel; the source stream and mapped names stay as they are."""
    if org_id is None or channel in SOURCE_STREAMS or channel.startswith(ORG_STREAM_PREFIX):
        return channel
    return f"{ORG_STREAM_PREFIX}{org_id}/{channel}"


def split_stream(stream: str) -> tuple[str | None, str]:
    """(ledger org_id, channel) of a checkpoint stream: the inverse of `org_stream`."""
    if stream.startswith(ORG_STREAM_PREFIX):
        org_id, _, channel = stream[len(ORG_STREAM_PREFIX) :].partition("/")
        if org_id and channel:
            return org_id, channel
    return None, stream


@dataclass(frozen=True, slots=True)
class OrgScope:
    """One org's rows (`org_id` None: the default org), or every org's (`every`); `fence`: the lease this
    worker must still hold for its writes to commit (None: unfenced, a single daemon or a command)."""

    org_id: str | None = None
    every: bool = False
    fence: Fence | None = None

    @property
    def key(self) -> str | None:
        """The `orgs` key of the scope's org ('default' for the default org); None for every org."""
        return None if self.every else org_key(self.org_id)

    def rows(self, table: Table) -> ColumnElement[bool]:
        """The condition that keeps `table`'s rows of this scope (always true for every org)."""
        if self.every:
            return true()
        if self.org_id is None:
            return table.c.org_id.is_(None)
        return table.c.org_id == self.org_id

    def serving(self) -> ColumnElement[bool]:
        """The condition that the scope's org may be written to: not disconnected. A claim checks it in its
        own statement, so a booking ingested in the same transaction as its org's disconnect is never claimed,
        whatever the fleet has or has not stopped yet (always true for every org)."""
        if self.every:
            return true()
        disconnected = select(ORGS.c.org_id).where(
            ORGS.c.org_id == self.key, ORGS.c.state == OrgState.DISCONNECTED.value
        )
        return ~exists(disconnected)

    def holds(self, org_id: str | None) -> bool:
        """Whether a row of this (ledger) org_id belongs to the scope."""
        return self.every or org_id == self.org_id

    def stream(self, channel: str) -> str:
        """The checkpoint stream of a channel in this scope."""
        return channel if self.every else org_stream(self.org_id, channel)

    def written_org(self, own: str | None = None) -> str | None:
        """The org_id a new row gets: its own when it names one, else the scope's (NULL for every org)."""
        if own is not None:
            return own
        return None if self.every else self.org_id


EVERY_ORG = OrgScope(every=True)


def scope_of(connection: Connection) -> OrgScope:
    """The scope the repository put on this connection (every org when none)."""
    scope = connection.get_execution_options().get(ORG_SCOPE, EVERY_ORG)
    assert isinstance(scope, OrgScope)
    return scope
