"""Write-through persistence of the emulated org's records to a SQLite state file (`--state FILE`)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from bridge.emulator.schema import FieldDef, Schema
from bridge.emulator.store_rows import Row
from bridge.emulator.validation import decode_stored, encode_stored

_DDL = (
    "CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, sobject TEXT NOT NULL,"
    " deleted INTEGER NOT NULL, cascade_root TEXT, seq INTEGER NOT NULL, data TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


class StateFile:
    """One SQLite file holding every record (deleted ones too) and the id counter."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        for ddl in _DDL:
            self._db.execute(ddl)
        self._seq = 0

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def is_empty(self) -> bool:
        """True before the first write (the org must be seeded)."""
        return bool(self._db.execute("SELECT COUNT(*) FROM meta").fetchone()[0] == 0)

    def load(self, schema: Schema) -> tuple[list[Row], int]:
        """Every stored row in creation order, and the id counter."""
        rows = []
        decoders: dict[str, dict[str, FieldDef]] = {}
        for _id, sobject, deleted, root, seq, data in self._db.execute(
            "SELECT id, sobject, deleted, cascade_root, seq, data FROM records ORDER BY seq"
        ):
            known = decoders.get(sobject)
            if known is None:
                obj = schema.get(sobject)
                known = decoders[sobject] = {f.name: f for f in obj.fields.values()} if obj else {}
            if not known:
                continue  # the org file no longer defines this object
            values = {k: decode_stored(known[k], v) for k, v in json.loads(data).items() if k in known}
            rows.append(Row(sobject, values, bool(deleted), root))
            self._seq = max(self._seq, seq)
        found = self._db.execute("SELECT value FROM meta WHERE key = 'counter'").fetchone()
        return rows, int(found[0]) if found else 0

    def write(self, rows: Iterable[tuple[str, Row | None]], counter: int) -> None:
        """Apply one committed transaction: upsert present rows, drop absent ones, save the counter."""
        with self._db:
            self._db.execute("BEGIN")
            for record_id, row in rows:
                if row is None:
                    self._db.execute("DELETE FROM records WHERE id = ?", (record_id,))
                    continue
                self._seq += 1
                data = json.dumps({k: encode_stored(v) for k, v in row.values.items()})
                self._db.execute(
                    "INSERT INTO records (id, sobject, deleted, cascade_root, seq, data) VALUES (?,?,?,?,?,?)"
                    " ON CONFLICT(id) DO UPDATE SET deleted=excluded.deleted,"
                    " cascade_root=excluded.cascade_root, data=excluded.data",
                    (record_id, row.sobject, int(row.deleted), row.cascade_root, self._seq, data),
                )
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('counter', ?)"
                " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (str(counter),),
            )

    def wipe(self) -> None:
        """Delete everything (reset to seed)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM records")
            self._db.execute("DELETE FROM meta")
        self._seq = 0
