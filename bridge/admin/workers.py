"""The workers, as `status --json`, `orgs`, the admin API, /metrics and the status page show them (CONTRACT
§10).

With tenancy on and a PostgreSQL ledger every `run` is a worker: the list is the ledger's `workers` rows
(live ones and those expired in the last minute, so a dead worker still shows), each with the orgs it holds
under a live lease. Without worker mode (a SQLite ledger, or tenancy off) one daemon does all the work, so
the list is that daemon alone when it runs (it reads the stream and serves every org it serves), and empty
when none runs: the ledger has no workers then, and a standby is not a worker.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from bridge.records.ledger import DEFAULT_ORG, OrgRecord, WorkerRecord

WORKER_KEYS = ("id", "host", "pid", "reader", "orgs", "draining", "alive", "started_at", "lease_until")


class ThisWorker(Protocol):
    """The live view of the process that answers: who it is, whether it reads the stream, what it serves."""

    @property
    def worker_id(self) -> str:
        """Its id in `workers` ('<host>-<pid>-<4 hex>'), or '<host>-<pid>' for the one daemon."""
        ...

    @property
    def host(self) -> str:
        """Its host name."""
        ...

    @property
    def pid(self) -> int:
        """Its process id."""
        ...

    def reading(self) -> bool:
        """It reads the change stream now."""
        ...

    def serving(self) -> Sequence[str]:
        """The orgs (`orgs` keys) it serves now, sorted."""
        ...


@dataclass(frozen=True, slots=True)
class LiveWorker:
    """A ThisWorker from callables: app.py hands one over in worker mode (the reader election's flag and the
    fleet's runtimes), so the admin app reads the process itself, not its last heartbeat."""

    worker_id: str
    host: str
    pid: int
    is_reading: Callable[[], bool]
    orgs: Callable[[], Iterable[str]]

    def reading(self) -> bool:
        """It reads the change stream now."""
        return self.is_reading()

    def serving(self) -> Sequence[str]:
        """The orgs it serves now, sorted."""
        return sorted(self.orgs())


def one_daemon_id(host: str | None = None, pid: int | None = None) -> str:
    """The id the one daemon of a non-worker setup shows: '<host>-<pid>' (no row in `workers` has it)."""
    return f"{host or socket.gethostname()}-{pid or os.getpid()}"


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """One worker as every surface shows it."""

    id: str
    host: str
    pid: int
    reader: bool
    orgs: tuple[str, ...] = ()
    draining: bool = False
    alive: bool = True  # its lease (or, for the one daemon, the process) is live
    started_at: datetime | None = None
    lease_until: datetime | None = None  # the database's time; None for the one daemon
    this: bool = field(default=False, compare=False)  # the process that answered


def record_row(record: WorkerRecord, now: datetime, this_id: str | None = None) -> WorkerRow:
    """A `workers` row; `alive` compares its lease with `now` (the answering host's clock: shown, never
    used to decide anything, so clock skew only moves the moment it flips)."""
    return WorkerRow(
        id=record.worker_id,
        host=record.host,
        pid=record.pid,
        reader=record.reader,
        orgs=tuple(sorted(record.orgs)),
        draining=record.draining,
        alive=record.lease_until > now,
        started_at=record.started_at,
        lease_until=record.lease_until,
        this=record.worker_id == this_id,
    )


def live_row(worker: ThisWorker, *, started_at: datetime | None = None) -> WorkerRow:
    """The answering process, read live."""
    return WorkerRow(
        id=worker.worker_id,
        host=worker.host,
        pid=worker.pid,
        reader=worker.reading(),
        orgs=tuple(worker.serving()),
        started_at=started_at,
        this=True,
    )


def merged(records: Sequence[WorkerRecord], now: datetime, this: ThisWorker | None) -> list[WorkerRow]:
    """The ledger's workers; the answering one's reader flag and orgs read live (its row is as old as its
    last round), and added when its first round has not reached the ledger yet."""
    this_id = this.worker_id if this is not None else None
    rows = [record_row(r, now, this_id) for r in records]
    if this is None:
        return rows
    live = live_row(this)
    for index, row in enumerate(rows):
        if row.this:
            rows[index] = replace(row, reader=live.reader, orgs=live.orgs)
            return rows
    return [*rows, live]


def worker_json(row: WorkerRow) -> dict[str, Any]:
    """CONTRACT §10's {"id", "host", "pid", "reader", "orgs"} and what else a row knows."""
    return {key: (list(row.orgs) if key == "orgs" else getattr(row, key)) for key in WORKER_KEYS}


def record_json(record: WorkerRecord, now: datetime) -> dict[str, Any]:
    """A `workers` row as JSON (the status command reads them straight from the ledger)."""
    return worker_json(record_row(record, now))


def serves(org: OrgRecord) -> bool:
    """The orgs a worker (or the one daemon, with tenancy) serves: the default org always, another while it
    is connected and not disconnected (the rule of bridge.tenancy.fleet.serves and the lease round)."""
    return org.org_id == DEFAULT_ORG or (org.connection == "connected" and org.state != "disconnected")


def worker_summary(workers: Sequence[Mapping[str, Any]]) -> str:
    """One line: how many workers are live, which reads the stream, how many orgs each serves."""
    if not workers:
        return "none running"
    live = [w for w in workers if w.get("alive", True)]
    expired = len(workers) - len(live)
    readers = [str(w["id"]) for w in live if w.get("reader")]
    parts = [f"{len(live)} live" + (f" ({expired} expired in the last minute)" if expired else "")]
    parts.append(f"reader {readers[0]}" if readers else "no reader")
    if live:
        parts.append("orgs per worker " + "/".join(str(len(w.get("orgs") or ())) for w in live))
    draining = sum(1 for w in live if w.get("draining"))
    if draining:
        parts.append(f"{draining} draining")
    return ", ".join(parts)


def short_worker(worker_id: str | None) -> str:
    """A worker id for a narrow cell: its pid and random suffix ('<host>-<pid>-<hex>' -> '<pid>-<hex>')."""
    if not worker_id:
        return ""
    parts = worker_id.rsplit("-", 2)
    return "-".join(parts[1:]) if len(parts) == 3 and parts[1].isdigit() else worker_id
