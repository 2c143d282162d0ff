"""Organizations and Salesforce connections from the source into the `orgs` table (CONTRACT §9).

Runs inside ingest's one batch transaction, in source order with the other tables' changes. The source says
whether an org is connected; the bridge's own causes (a refused token, an exhausted allocation) are the
runtime's: a (re)connected org becomes 'active' unless it is 'paused', which only the runtime lifts. A
disconnected, deleted or unreadable connection makes it 'disconnected' whatever it was. `state_since` moves
only with the state. Journal entries never carry the username's value (it names a person's login).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from bridge.ledger.tables import ORGS
from bridge.ledger.workset import Row, WorkingTable
from bridge.records.ledger import DEFAULT_ORG, Direction, OrgState
from bridge.records.source import ChangeOp, ConnectionRow, OrganizationRow, SourceChange, SourceTable

CONNECTED = "connected"
UNKNOWN = "unknown"  # the `connection` of a status the decoder could not read (its problem is journaled)
NO_CONNECTION = "no Salesforce connection in the scheduler"
DISCONNECTED = "disconnected in the scheduler"
CONNECTION_DELETED = "the Salesforce connection was deleted in the scheduler"
CONNECTION_UNREADABLE = "the connection's status in the scheduler is neither connected nor disconnected"
ORGANIZATION_DELETED = "the organization was deleted in the scheduler"
# Connection columns whose change is journaled by name (values stay out of the journal).
_WATCHED = ("login_url", "username")


def org_journal_row(now: datetime, org_id: str, action: str, detail: dict[str, Any]) -> Row:
    """A journal row (insert parameters) of an org, in that org."""
    return {
        "at": now,
        "org_id": org_id,
        "direction": Direction.OUTBOUND.value,
        "entity": "org",
        "entity_key": org_id,
        "action": action,
        "detail": detail,
    }


class OrgChanges:
    """The `orgs` rows one segment of a batch touches, changed in source order and written back in bulk."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.table = WorkingTable(ORGS, "org_id")
        self.journal: list[Row] = []
        self.changed = False

    def preload(self, connection: Connection, changes: list[SourceChange]) -> None:
        """Load the orgs rows the changes name (every connected one for a TRUNCATE of connections)."""
        keys = {c.row.id for c in changes if isinstance(c.row, OrganizationRow | ConnectionRow)}
        self.table.load_keys(connection, keys)
        if any(c.table is SourceTable.CONNECTIONS and c.op is ChangeOp.TRUNCATE for c in changes):
            every = ORGS.c.org_id != DEFAULT_ORG
            self.table.load_where(connection, "connection", (CONNECTED, "disconnected", UNKNOWN), every)

    def apply(self, change: SourceChange, detail: dict[str, Any]) -> None:
        """Apply one organizations or salesforce_connections change; `detail` goes on its journal entries."""
        row = change.row
        if isinstance(row, OrganizationRow):
            self._organization(row, change.op, detail)
        elif isinstance(row, ConnectionRow):
            self._connection(row, change.op, detail)
        elif change.table is SourceTable.CONNECTIONS:  # TRUNCATE: every connection is gone
            for org in list(self.table.rows.values()):
                if org["org_id"] != DEFAULT_ORG and org["connection"] is not None:
                    org["connection"] = None
                    self._disconnect(org, CONNECTION_DELETED, detail)

    def flush(self, connection: Connection) -> None:
        """Write the changed rows back."""
        self.changed |= self.table.flush(connection) > 0

    def _row(self, org_id: str) -> Row:
        org = self.table.get(org_id)
        if org is None:
            org = self.table.put(
                {
                    "org_id": org_id,
                    "name": None,
                    "login_url": None,
                    "username": None,
                    "connection": None,
                    "salesforce_org_id": None,
                    "instance_url": None,
                    "state": OrgState.DISCONNECTED.value,
                    "reason": NO_CONNECTION,
                    "api_used": None,
                    "api_limit": None,
                    "state_since": self.now,
                    "updated_at": self.now,
                }
            )
        return org

    def _organization(self, row: OrganizationRow, op: ChangeOp, detail: dict[str, Any]) -> None:
        if not row.id:
            return
        org = self._row(row.id)
        if op is ChangeOp.DELETE:
            self._disconnect(org, ORGANIZATION_DELETED, detail)
            return
        if "name" not in row.unchanged and org["name"] != row.name:
            org.update(name=row.name, updated_at=self.now)

    def _connection(self, row: ConnectionRow, op: ChangeOp, detail: dict[str, Any]) -> None:
        if not row.id:
            return
        org = self._row(row.id)
        if op is ChangeOp.DELETE:
            org.update(connection=None, updated_at=self.now)
            self._disconnect(org, CONNECTION_DELETED, detail)
            return
        fields = [f for f in _WATCHED if f not in row.unchanged and org[f] != getattr(row, f)]
        if fields and org["connection"] is not None:
            self.journal.append(
                org_journal_row(self.now, row.id, "org.changed", {**detail, "fields": fields})
            )
        for name in fields:
            org[name] = getattr(row, name)
        status = org["connection"] if "status" in row.unchanged else (row.status or UNKNOWN)
        if fields or status != org["connection"]:
            org.update(connection=status, updated_at=self.now)
        if org["connection"] == CONNECTED:
            self._connect(org, detail)
        else:
            reason = DISCONNECTED if org["connection"] == "disconnected" else CONNECTION_UNREADABLE
            problems = {"problems": list(row.problems)} if row.problems else {}
            self._disconnect(org, reason, {**detail, **problems})

    def _connect(self, org: Row, detail: dict[str, Any]) -> None:
        if org["state"] == OrgState.DISCONNECTED.value:
            self._set_state(org, OrgState.ACTIVE, None)
            self.journal.append(org_journal_row(self.now, org["org_id"], "org.connected", detail))

    def _disconnect(self, org: Row, reason: str, detail: dict[str, Any]) -> None:
        if org["state"] != OrgState.DISCONNECTED.value or org["reason"] != reason:
            was = org["state"]
            self._set_state(org, OrgState.DISCONNECTED, reason)
            entry = {**detail, "reason": reason, "from": was}
            self.journal.append(org_journal_row(self.now, org["org_id"], "org.disconnected", entry))

    def _set_state(self, org: Row, state: OrgState, reason: str | None) -> None:
        if org["state"] != state.value:
            org["state_since"] = self.now
        org.update(state=state.value, reason=reason, updated_at=self.now)
