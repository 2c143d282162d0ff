"""The reconciliation runs the admin app started: which runner runs each, and one run at a time per org.

A run started without `orgs` (tenancy off, the page's form) goes to the daemon's one runner (with tenancy,
the default org's) and, as before tenancy, while it runs no other run starts. With `orgs`, each org's run
goes to the runner of that org's runtime (`org_runner`); an org without a runtime now (paused,
disconnected) is refused with 409 and its state, and two runs of the same org never overlap.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import structlog
from aiohttp import web

from bridge.admin import views
from bridge.admin.orgs import ledger_org
from bridge.admin.ports import OrgLedger, ReconcileRunner

log = structlog.get_logger(__name__)

OptionsT = TypeVar("OptionsT")
ALL_ORGS = "*"  # the key of a run started without `orgs`


def _conflict(body: dict[str, Any]) -> web.HTTPConflict:
    return web.HTTPConflict(text=json.dumps(body), content_type="application/json")


async def known_orgs(ledger: OrgLedger, orgs: Sequence[str]) -> None:
    """BadRequest naming the org ids the ledger does not know."""
    unknown = [org for org in orgs if await ledger.get_org(org) is None]
    if unknown:
        raise views.BadRequest(f"no org {', '.join(map(repr, unknown))}")


class RunTasks(Generic[OptionsT]):
    """Starts runs on the right runner and keeps their background tasks."""

    def __init__(
        self,
        ledger: OrgLedger,
        runner: ReconcileRunner[OptionsT] | None,
        make_options: Callable[..., OptionsT] | None,
        org_runner: Callable[[str | None], ReconcileRunner[OptionsT] | None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.runner = runner
        self.make_options = make_options
        self.org_runner = org_runner
        self._tasks: dict[asyncio.Task[None], str] = {}  # running task -> the org it reconciles

    def _busy(self) -> set[str]:
        return {org for task, org in self._tasks.items() if not task.done()}

    async def start(self, req: views.ReconcileRequest, *, requested_by: str) -> int:
        """One run without `orgs` on the daemon's runner (tenancy off: the one org; with tenancy: the default
        org's, as `reconcile` without --org); 409 while any run runs."""
        if self._busy():
            raise _conflict({"error": "a reconciliation run is already in progress"})
        return await self._launch(self.runner, req, requested_by, ALL_ORGS)

    async def start_orgs(self, req: views.ReconcileRequest, *, requested_by: str) -> list[dict[str, Any]]:
        """One run per org of `req.orgs`, each on its org's runner: [{"org", "id"}]. Unknown orgs are a
        BadRequest naming them; an org without a runtime, or one already reconciling, is 409 and nothing
        starts."""
        await known_orgs(self.ledger, req.orgs)
        runners = [(org, await self._runner_of(org)) for org in req.orgs]
        busy = self._busy()
        if ALL_ORGS in busy or busy & set(req.orgs):
            raise _conflict({"error": "a reconciliation run is already in progress"})
        return [
            {"org": org, "id": await self._launch(runner, req, requested_by, org)} for org, runner in runners
        ]

    async def _runner_of(self, org: str) -> ReconcileRunner[OptionsT]:
        """The runner of an org's runtime; 409 with the org's state and reason when it has none now."""
        if self.org_runner is not None:
            runner = self.org_runner(ledger_org(org))
        else:  # tenancy off: the daemon's one runner serves the default org
            runner = self.runner if ledger_org(org) is None else None
        if runner is not None:
            return runner
        record = await self.ledger.get_org(org)
        state = record.state if record else "unknown"
        reason = record.reason if record else None
        because = f" ({reason})" if reason else ""
        raise _conflict(
            {
                "error": f"org {org!r} has no runtime now: it is {state}{because}",
                "org": org,
                "state": state,
                "reason": reason,
            }
        )

    async def _launch(
        self,
        runner: ReconcileRunner[OptionsT] | None,
        req: views.ReconcileRequest,
        requested_by: str,
        org: str,
    ) -> int:
        if runner is None or self.make_options is None:
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": "reconciliation is not available in this daemon"}),
                content_type="application/json",
            )
        options = self.make_options(
            links=req.links,
            bookings=req.bookings,
            since=req.since,
            until=req.until,
            changed_since=req.changed_since,
            changed_until=req.changed_until,
            dry_run=req.dry_run,
            requested_by=requested_by,
        )
        run_id = await runner.start(options)
        task = asyncio.create_task(self._execute(runner, run_id, options), name=f"reconcile-{run_id}")
        self._tasks[task] = org
        task.add_done_callback(self._forget)
        log.info(
            "admin.reconciliation_started",
            run_id=run_id,
            dry_run=req.dry_run,
            by=requested_by,
            org=None if org == ALL_ORGS else org,
        )
        return run_id

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    async def _execute(self, runner: ReconcileRunner[OptionsT], run_id: int, options: OptionsT) -> None:
        try:
            await runner.execute(run_id, options)
        except asyncio.CancelledError:
            log.warning("admin.reconciliation_cancelled", run_id=run_id)
            raise
        except Exception as exc:
            log.error(
                "admin.reconciliation_failed", run_id=run_id, error_type=type(exc).__name__, error=str(exc)
            )
        else:
            log.info("admin.reconciliation_finished", run_id=run_id)

    async def cancel(self) -> None:
        """Cancel runs still executing (the app is stopping)."""
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
