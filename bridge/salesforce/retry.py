"""Retrying transient Salesforce failures: capped attempts, a total deadline, full-jitter backoff.

Only the exception types a policy names are retried (by default `SalesforceUnavailable`, which the client
raises for 5xx, timeouts, dropped connections and row locks). Anything else, including programming errors
and `ApiLimitExhausted` (the pipeline waits that out, not the client), propagates at once, and so does a
`RetriesExhausted` from an inner loop: the token manager retries its own requests, and the REST client must
not multiply those attempts. Sleep, clock and randomness are injected so tests run without waiting.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from bridge.errors import SalesforceUnavailable
from bridge.redact import first_line

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry, and on what."""

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    deadline: float = 120.0  # seconds from the first attempt; no retry would start after it
    retry_on: tuple[type[BaseException], ...] = (SalesforceUnavailable,)

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Full jitter: uniform in [0, min(max_delay, base_delay * 2**(attempt-1))] after `attempt`."""
        ceiling: float = min(self.max_delay, self.base_delay * 2.0 ** max(attempt - 1, 0))
        return rand() * ceiling


class RetriesExhausted(SalesforceUnavailable):
    """The last transient failure, after every allowed attempt (or the deadline) was used."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


async def call_with_retries(
    operation: Callable[[], Awaitable[_T]],
    policy: RetryPolicy,
    *,
    name: str,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
    rand: Callable[[], float] = random.random,
    host: str | None = None,
) -> _T:
    """Run `operation`, retrying the policy's exception types; raise RetriesExhausted when out of budget.

    `host` (the server the operation talks to) goes on the log lines, with the first line of the error.
    """
    started = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await operation()
        except RetriesExhausted:
            raise  # an inner retry loop (e.g. the token endpoint's) already used its budget
        except policy.retry_on as exc:
            delay = policy.backoff(attempt, rand)
            retry_after = getattr(exc, "retry_after", None)
            if isinstance(retry_after, int | float):
                delay = max(delay, float(retry_after))
            out_of_time = clock() - started + delay > policy.deadline
            if attempt >= policy.max_attempts or out_of_time:
                log.warning(
                    "salesforce.retries_exhausted",
                    operation=name,
                    attempts=attempt,
                    host=host,
                    error=first_line(exc),
                )
                raise RetriesExhausted(
                    f"{name}: gave up after {attempt} attempt(s): {exc}", attempts=attempt
                ) from exc
            log.info(
                "salesforce.retrying",
                operation=name,
                attempt=attempt,
                delay_s=round(delay, 3),
                host=host,
                error=first_line(exc),
            )
            await sleep(delay)
