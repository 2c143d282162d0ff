"""One org's runtime: its token, client and components, paused with a reason when a cause stops its work, and
resumed by itself once the cause is gone.

Life of a runtime (the `orgs` table shows its state and reason):

    start   a token for the org's integration user; the token's org (00D id) is checked against the one the
            org's records were written to, and against every other org (two customers on one Salesforce org
            would mix their records); then its parts (pusher, gap reconciler, stream, allocation watch) run
            under their own supervisor: state 'active'
    pause   a part fails (the token refused, the user deactivated, an unexpected error) -> 'paused' with the
            reason; everything of this org stops, its rows wait in the ledger; after
            `tenancy.resume_check_seconds` it starts again. While the pusher holds its calls (the API
            allocation used up, Salesforce unreachable) for longer than `HOLD_PAUSE_SECONDS`, the org also
            shows 'paused' with that reason, and 'active' again once calls go out.
    stop    the daemon stops, or the org is disconnected or its connection changed: the parts drain.
    end     (several workers, issue 14) the org's lease was lost (`LeaseLost` from a fenced ledger write) or
            this worker may no longer call Salesforce for it (`NotPermitted`): the runtime ends at once,
            without a pause, and the fleet aligns the org at the next round (a new epoch, a new runtime).

Nothing of one org's failure reaches another org: each runtime catches its own failures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import aiohttp
import structlog

from bridge.aio import sleep_or_stop
from bridge.config import Settings
from bridge.errors import BridgeError, LeaseLost, LedgerUnavailable
from bridge.records.ledger import DEFAULT_ORG, OrgRecord, OrgState
from bridge.redact import describe
from bridge.supervisor import ComponentState, supervise
from bridge.tenancy.connect import OrgUnusable, pause_reason
from bridge.tenancy.parts import OrgParts, Shared

if TYPE_CHECKING:
    from bridge.ledger.repository import Ledger
    from bridge.pipeline.gaps import TakingTurns
    from bridge.records.ledger import Fence
    from bridge.salesforce.auth import AccessToken
    from bridge.salesforce.channels import ChannelCheck

log = structlog.get_logger(__name__)

HOLD_PAUSE_SECONDS = 3.0  # the pusher holding its calls this long shows the org as paused
WATCH_SECONDS = 1.0
USAGE_WRITE_SECONDS = 15.0  # how often a changed API usage reading is written to `orgs`
PUSHER_HOLDS = {
    "api_limit": "the org's API allocation is used up (REQUEST_LIMIT_EXCEEDED or below the reserve)",
    "salesforce_unavailable": "Salesforce is unreachable or failing (its calls are retried)",
    "ledger_unavailable": "the ledger is unreachable (nothing is lost: rows wait)",
}


class OrgRuntime:
    """Serves one org until stopped; pauses on a cause and resumes by itself."""

    def __init__(
        self,
        org: OrgRecord,
        settings: Settings,
        http: aiohttp.ClientSession,
        shared: Shared,
        *,
        idle_poll_seconds: float | None = None,
        monotonic: Callable[[], float] = lambda: asyncio.get_running_loop().time(),
        fence: Fence | None = None,
        permit: Callable[[], None] | None = None,
    ) -> None:
        from bridge.salesforce.auth import TokenManager
        from bridge.salesforce.rest import SalesforceClient

        self.org = org
        self.settings = settings
        # As one of several workers: every write transaction checks this worker's lease (its fence), and
        # every Salesforce request first asks `permit` (it raises NotPermitted once the lease may be gone).
        self.fence = fence
        self.ledger: Ledger = (
            shared.ledger.scoped(org.ledger_org, fence=fence)
            if fence is not None
            else shared.ledger.scoped(org.ledger_org)
        )
        self.tokens = TokenManager(http, settings.salesforce)
        self.client = SalesforceClient(http, self.tokens, settings.salesforce, permit=permit)
        self._permit = permit
        self._shared = shared
        self._idle_poll_seconds = idle_poll_seconds
        self._monotonic = monotonic
        self.parts: OrgParts | None = None
        self.states: dict[str, ComponentState] = {}
        self.state = org.state
        self.reason = org.reason
        self.pushed = 0  # outcomes of earlier parts (a pause rebuilds them)
        self.failed = 0
        self._resuming = False  # after a pause: a new token first, never the cached (perhaps revoked) one
        self.lease_lost = False  # ended because another worker took the org (this epoch is over)
        self._provisioned = False  # the custom channel ensured for this runtime's integration user
        self._ensured: ChannelCheck | None = None  # ...just now: the next parts need not check it again

    @property
    def org_id(self) -> str:
        """The org's id in `orgs` ('default' for the org of `[salesforce]`)."""
        return self.org.org_id

    def notify(self) -> None:
        """New work may be pending for this org."""
        if self.parts is not None:
            self.parts.pusher.notify()

    def runner(self) -> TakingTurns | None:
        """The admin API's reconciliation runner, while the org is served."""
        return self.parts.runner() if self.parts is not None and self.state == OrgState.ACTIVE else None

    async def run(self, stop: asyncio.Event) -> None:
        """Serve the org until `stop`; a failure pauses it for `tenancy.resume_check_seconds`, then it
        starts again."""
        while not stop.is_set():
            try:
                await self._serve(stop)
            except Exception as exc:  # one org's failure never reaches another org
                if self._not_ours(exc):
                    return
                self._resuming = True
                reason = pause_reason(exc)
                await self._set_state(OrgState.PAUSED, reason)
                log.warning(
                    "org.paused",
                    org=self.org_id,
                    reason=reason,
                    error_type=type(exc).__name__,
                    retry_in_seconds=self.settings.tenancy.resume_check_seconds,
                )
            finally:
                self._retire_parts()
            if stop.is_set() or await sleep_or_stop(stop, self.settings.tenancy.resume_check_seconds):
                return

    def _not_ours(self, exc: BaseException) -> bool:
        """The org is not this worker's to serve now (several workers): log why; the runtime ends without
        a pause (and without writing the org's state, which a fenced ledger would refuse anyway)."""
        leaves = _leaves(exc)
        lost = next((leaf for leaf in leaves if isinstance(leaf, LeaseLost)), None)
        if lost is not None:
            self.lease_lost = True
            epoch = self.fence.epoch if self.fence is not None else None
            log.warning("fleet.lease_lost", org=self.org_id, epoch=epoch, error=str(lost))
            return True
        if any(_not_permitted(leaf) for leaf in leaves):
            log.warning("fleet.not_permitted", org=self.org_id)
            return True
        return False

    async def _serve(self, stop: asyncio.Event) -> None:
        """Start the org's parts with a token that works now, and supervise them until stop or a failure."""
        token = await (self.tokens.refresh(self.tokens.token) if self._resuming else self.tokens.get())
        self._resuming = False
        await self._check_identity(token)
        await self._provision_channel(token)
        parts = OrgParts(
            self.settings,
            self.ledger,
            self.tokens,
            self.client,
            self._shared,
            idle_poll_seconds=self._idle_poll_seconds,
            observe_subscription=self.org_id == DEFAULT_ORG,
            permit=self._permit,
            channel=self._ensured,
        )
        self._ensured = None  # later parts (a rebuild) check the channel again
        self.parts = parts
        components = await parts.components()
        components["watch"] = self._watch
        await self._set_state(OrgState.ACTIVE, None)
        log.info("org.active", org=self.org_id, instance_url=token.instance_url)
        self.states = {}
        await supervise(components, stop, self.states)

    async def _provision_channel(self, token: AccessToken) -> None:
        """A customer org's `setup` of the filtered custom channel, once per runtime: without it every Event
        the bridge writes there comes back as a change event (and counts against the org's delivered-event
        allocation). A refusal (no Tooling API rights) leaves the org on the standard channels under
        `sync.channel = auto`, as `setup` would."""
        from bridge.salesforce.channels import ensure_channel, provisioned

        sync = self.settings.sync
        if (
            self._provisioned
            or self.org_id == DEFAULT_ORG
            or not sync.streaming
            or sync.channel == "standard"
        ):
            return
        if token.user_id is None:
            return
        try:
            done = await ensure_channel(
                self.client, self.settings.salesforce.objects, sync.channel_name, token.user_id
            )
        except BridgeError as exc:
            if sync.channel == "custom" or _not_permitted(exc):
                raise  # not permitted: the org is not this worker's now, which is no refusal of the channel
            log.warning("org.custom_channel_refused", org=self.org_id, error=describe(exc))
            return
        self._provisioned, self._ensured = True, provisioned(sync.channel_name)
        log.info("org.custom_channel", org=self.org_id, done="; ".join(done))

    def _retire_parts(self) -> None:
        if self.parts is not None:
            self.pushed += self.parts.pusher.pushed
            self.failed += self.parts.pusher.failed
        self.parts = None

    async def _check_identity(self, token: AccessToken) -> None:
        """The token must reach the Salesforce org this org's records are in, and no other customer's."""
        found = token.org_id
        if found is None:
            return
        known = await self.ledger.get_org(self.org_id)
        written_to = known.salesforce_org_id if known is not None else None
        if written_to is not None and written_to != found:
            raise OrgUnusable(
                f"the connection now reaches Salesforce org {found}, but this org's records are in "
                f"{written_to}: correct the connection's login URL or user (or clear "
                "orgs.salesforce_org_id to move the org on purpose)"
            )
        for other in await self.ledger.list_orgs():
            if other.org_id != self.org_id and other.salesforce_org_id == found:
                raise OrgUnusable(
                    f"Salesforce org {found} is already connected to organization {other.org_id}; "
                    "one Salesforce org serves one organization"
                )
        if written_to is None or (known is not None and known.instance_url != token.instance_url):
            await self.ledger.record_org_identity(self.org_id, found, token.instance_url)

    async def _watch(self, stop: asyncio.Event) -> None:
        """Reflect the pusher's holds in the org's state, and keep its API use in `orgs` current."""
        held_since: float | None = None
        written: tuple[int, int] | None = None
        written_at = float("-inf")
        while not await sleep_or_stop(stop, WATCH_SECONDS):
            parts = self.parts
            if parts is None:
                continue
            now = self._monotonic()
            waiting = parts.pusher.waiting_reason
            if waiting is None:
                held_since = None
                if self.state == OrgState.PAUSED:
                    await self._set_state(OrgState.ACTIVE, None)
            else:
                held_since = now if held_since is None else held_since
                if now - held_since >= HOLD_PAUSE_SECONDS:
                    await self._set_state(OrgState.PAUSED, PUSHER_HOLDS.get(waiting, waiting))
            usage = self.client.usage
            if (
                usage is not None
                and (usage.used, usage.limit) != written
                and now - written_at >= USAGE_WRITE_SECONDS
            ):
                await self.ledger.record_org_api(self.org_id, usage.used, usage.limit)
                written, written_at = (usage.used, usage.limit), now

    async def _set_state(self, state: OrgState, reason: str | None) -> None:
        """Record the org's state once it changes; a ledger away leaves it to the next change or retry."""
        if (self.state, self.reason) == (state.value, reason):
            return
        try:
            await self.ledger.set_org_state(self.org_id, state, reason)
        except LedgerUnavailable as exc:
            log.warning("org.state_not_recorded", org=self.org_id, state=state.value, error=str(exc))
            return
        self.state, self.reason = state.value, reason


def _leaves(exc: BaseException) -> list[BaseException]:
    """The non-group exceptions inside (possibly nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _not_permitted(exc: BaseException) -> bool:
    """This worker may not call the org now (several workers; bridge/tenancy/workers.py)."""
    from bridge.tenancy.workers import NotPermitted

    return isinstance(exc, NotPermitted)
