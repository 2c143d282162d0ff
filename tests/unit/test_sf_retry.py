"""The retry policy: named exceptions only, capped attempts and total time, full-jitter backoff."""

from __future__ import annotations

import pytest

from bridge.errors import ApiLimitExhausted, ConfigurationError, SalesforceUnavailable
from bridge.salesforce.retry import RetriesExhausted, RetryPolicy, call_with_retries


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        """Current fake time."""
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Advance the fake time instead of waiting."""
        self.sleeps.append(seconds)
        self.now += seconds


class Flaky:
    """An operation that fails with the given exceptions, then succeeds."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        """Raise the next planned failure, or answer 'ok'."""
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def always_max() -> float:
    """A 'random' source that always picks the top of the jitter range."""
    return 1.0


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (7, 30.0), (20, 30.0)],
)
def test_backoff_ceiling_doubles_up_to_max(attempt: int, expected: float) -> None:
    """The jitter range doubles per attempt from base_delay and is capped at max_delay."""
    policy = RetryPolicy(base_delay=0.5, max_delay=30.0)
    assert policy.backoff(attempt, always_max) == expected


def test_backoff_is_full_jitter() -> None:
    """Full jitter: the delay is the random fraction of the ceiling, down to zero."""
    policy = RetryPolicy(base_delay=1.0, max_delay=60.0)
    assert policy.backoff(3, lambda: 0.0) == 0.0
    assert policy.backoff(3, lambda: 0.25) == 1.0


async def test_retries_named_exception_until_success() -> None:
    """Two SalesforceUnavailable then success: three calls, two sleeps, the result comes back."""
    time = FakeTime()
    operation = Flaky(SalesforceUnavailable("503"), SalesforceUnavailable("503"))
    result = await call_with_retries(
        operation, RetryPolicy(), name="op", sleep=time.sleep, clock=time.clock, rand=always_max
    )
    assert result == "ok"
    assert operation.calls == 3
    assert time.sleeps == [0.5, 1.0]


async def test_gives_up_after_max_attempts() -> None:
    """After max_attempts failures the last error is raised as RetriesExhausted (still transient)."""
    time = FakeTime()
    operation = Flaky(*[SalesforceUnavailable(f"fail {i}") for i in range(10)])
    with pytest.raises(RetriesExhausted) as info:
        await call_with_retries(
            operation,
            RetryPolicy(max_attempts=3),
            name="op",
            sleep=time.sleep,
            clock=time.clock,
            rand=always_max,
        )
    assert operation.calls == 3
    assert info.value.attempts == 3
    assert isinstance(info.value, SalesforceUnavailable)
    assert "fail 2" in str(info.value)
    assert len(time.sleeps) == 2


async def test_gives_up_at_the_total_deadline() -> None:
    """No retry starts when its delay would pass the total deadline, however many attempts remain."""
    time = FakeTime()
    operation = Flaky(*[SalesforceUnavailable("slow") for _ in range(50)])
    policy = RetryPolicy(max_attempts=50, base_delay=4.0, max_delay=4.0, deadline=10.0)
    with pytest.raises(RetriesExhausted):
        await call_with_retries(
            operation, policy, name="op", sleep=time.sleep, clock=time.clock, rand=always_max
        )
    assert time.sleeps == [4.0, 4.0]
    assert operation.calls == 3


@pytest.mark.parametrize(
    "error",
    [
        ApiLimitExhausted("limit", retry_after=300),
        ConfigurationError("bad key", "salesforce.client_id"),
        ValueError("a programming error"),
        KeyError("another one"),
    ],
)
async def test_unnamed_exceptions_propagate_at_once(error: Exception) -> None:
    """Only the named types are retried; limits, configuration and bugs surface on the first call."""
    time = FakeTime()
    operation = Flaky(error)
    with pytest.raises(type(error)):
        await call_with_retries(operation, RetryPolicy(), name="op", sleep=time.sleep, clock=time.clock)
    assert operation.calls == 1
    assert time.sleeps == []


async def test_retry_after_hint_is_honoured() -> None:
    """An exception's retry_after is a floor for the delay."""
    time = FakeTime()
    operation = Flaky(SalesforceUnavailable("busy", retry_after=7.0))
    await call_with_retries(
        operation, RetryPolicy(), name="op", sleep=time.sleep, clock=time.clock, rand=always_max
    )
    assert time.sleeps == [7.0]


async def test_policy_can_name_other_exception_types() -> None:
    """A policy retries exactly the types it lists."""
    time = FakeTime()
    operation = Flaky(TimeoutError(), TimeoutError())
    policy = RetryPolicy(retry_on=(TimeoutError,))
    assert await call_with_retries(operation, policy, name="op", sleep=time.sleep, clock=time.clock) == "ok"
    assert operation.calls == 3


async def test_exhausted_inner_retries_are_not_retried_again() -> None:
    """A RetriesExhausted from a nested loop (token endpoint) is final: attempts do not multiply."""
    time = FakeTime()
    operation = Flaky(RetriesExhausted("token endpoint down", attempts=6))
    with pytest.raises(RetriesExhausted):
        await call_with_retries(operation, RetryPolicy(), name="op", sleep=time.sleep, clock=time.clock)
    assert operation.calls == 1
