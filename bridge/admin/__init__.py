"""The admin HTTP app inside the daemon: health, readiness, status, metrics, retry and reconciliation."""

from bridge.admin.ports import ReconcileRunner
from bridge.admin.probe import DaemonProbe, ping_postgres
from bridge.admin.server import AdminServer, parse_listen

__all__ = ["AdminServer", "DaemonProbe", "ReconcileRunner", "parse_listen", "ping_postgres"]
