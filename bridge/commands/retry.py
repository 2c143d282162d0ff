"""`mogli-bridge retry`: failed records back to the queue, through the running daemon when there is one."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from bridge.admin.client import AdminClient, DaemonAbsent, DaemonSilent, reason
from bridge.commands.checks import in_org, require_known, require_org, require_setup
from bridge.config import Settings
from bridge.errors import ConfigurationError


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Dispatch from the command line."""
    return retry(settings, booking_ids=args.booking, all_failed=args.all_failed, org=args.org)


def retry(
    settings: Settings,
    *,
    booking_ids: Sequence[str],
    all_failed: bool,
    out: TextIO | None = None,
    org: str | None = None,
) -> int:
    """`mogli-bridge retry`: failed records back to the queue (of `org` alone when given), through the
    daemon when it runs.

    Without an answer from the daemon's API the ledger is written directly, but only under the ledger's
    instance lock: a command never writes behind a daemon that holds it (exit 1 with the reason instead).
    """
    from bridge.ledger import requeue
    from bridge.ledger.lock import InstanceLock
    from bridge.ledger.repository import Ledger

    out = out or sys.stdout
    if bool(booking_ids) == all_failed:
        raise ConfigurationError("retry needs --booking ID... or --all-failed", "--booking")
    require_setup(settings)
    require_org(settings, org)
    require_known(settings, bookings=booking_ids, org=org)
    body: dict[str, object] = {"all_failed": True} if all_failed else {"booking_ids": list(booking_ids)}
    if org is not None:
        body["org"] = org
    try:
        reply = AdminClient(settings.admin).call("POST", "/api/retry", body)
    except (DaemonAbsent, DaemonSilent) as exc:
        api = "did not answer" if isinstance(exc, DaemonAbsent) else "accepted but did not answer in time"
    else:
        if reply.status == 200:
            out.write(f"requeued {int(reply.body['requeued'])} record(s) through the running daemon\n")
            return 0
        api = f"answered {reply.status} ({reason(reply.body)})"
    lock = InstanceLock(settings.ledger.url)
    if not lock.try_acquire():
        print(
            f"error: a running mogli-bridge daemon holds the ledger, but its admin API at "
            f"{settings.admin.listen} {api}; the ledger was not changed (check admin.listen and "
            "admin.token, then retry through the daemon)",
            file=sys.stderr,
        )
        return 1
    try:
        out.write(f"no daemon holds the ledger (the admin API {api}); writing the ledger directly\n")
        base = Ledger.from_url(settings.ledger.url)
        try:
            moved = in_org(base, org).call(
                requeue.requeue, list(booking_ids) or None, all_failed, base.now(), "cli"
            )
        finally:
            base.dispose()
    finally:
        lock.release()
    out.write(f"requeued {moved} record(s) in the ledger; a daemon pushes them once it runs\n")
    return 0
