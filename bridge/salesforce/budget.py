"""The REST client's API budget: the org's daily API usage as last seen, and the reserve it keeps.

When the last `Sforce-Limit-Info` shows less than `salesforce.api_reserve_fraction` of the daily allocation
left, calls raise `ApiLimitExhausted` without touching Salesforce, so the pipeline pauses before the
allocation runs out. The reading goes stale after `salesforce.api_budget_recheck_seconds`; then one call is
let through to learn the current usage (the window is rolling, so calls free up over time).
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from bridge.config import SalesforceSettings
from bridge.errors import ApiLimitExhausted
from bridge.records.outbound import ApiUsage
from bridge.salesforce.payloads import parse_limit_info

log = structlog.get_logger(__name__)


class ApiBudget:
    """The latest API usage reading and the reserve check every budgeted call passes first."""

    def __init__(self, settings: SalesforceSettings, clock: Callable[[], float]) -> None:
        self._reserve = settings.api_reserve_fraction
        self._recheck = settings.api_budget_recheck_seconds
        self._clock = clock
        self._usage: ApiUsage | None = None
        self._seen_at = 0.0

    @property
    def usage(self) -> ApiUsage | None:
        """The org's API usage as last read."""
        return self._usage

    def note(self, usage: ApiUsage) -> None:
        """A reading of the usage (from `/limits`)."""
        self._usage, self._seen_at = usage, self._clock()

    def note_header(self, header: str | None) -> None:
        """Remember the reading of a `Sforce-Limit-Info` header, if it carries one."""
        usage = parse_limit_info(header)
        if usage is not None:
            self.note(usage)

    def check(self) -> None:
        """Refuse a call while the last reading shows less than the reserve left (see module doc)."""
        usage, reserve = self._usage, self._reserve
        if usage is None or reserve <= 0 or usage.remaining >= reserve * usage.limit:
            return
        age = self._clock() - self._seen_at
        if age >= self._recheck:
            # Let this one call probe; concurrent callers wait for its reading instead of joining it.
            self._seen_at = self._clock()
            return
        log.warning("salesforce.api_budget_reserve_reached", used=usage.used, limit=usage.limit)
        raise ApiLimitExhausted(
            f"only {usage.remaining} of {usage.limit} daily API calls left, below the reserve "
            f"salesforce.api_reserve_fraction = {reserve}",
            retry_after=self._recheck - age,
        )
