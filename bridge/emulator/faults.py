"""Fault injection: rules that make matching requests fail, stall, or lose their connection."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.emulator.contracts import ApiError

_DEFAULT_CODES = {
    400: "UNABLE_TO_LOCK_ROW",
    401: "INVALID_SESSION_ID",
    403: "REQUEST_LIMIT_EXCEEDED",
    404: "NOT_FOUND",
    500: "UNKNOWN_EXCEPTION",
    502: "SERVER_UNAVAILABLE",
    503: "SERVER_UNAVAILABLE",
}
_DEFAULT_MESSAGES = {
    "UNABLE_TO_LOCK_ROW": "unable to obtain exclusive access to this record",
    "SERVER_UNAVAILABLE": "Server temporarily unavailable, please try again later",
    "INVALID_SESSION_ID": "Session expired or invalid",
    "REQUEST_LIMIT_EXCEEDED": "TotalRequests Limit exceeded.",
    "NOT_FOUND": "The requested resource does not exist",
    "UNKNOWN_EXCEPTION": "An unexpected error occurred. Please include this ErrorId if you contact support",
}
_ACTIONS = ("respond", "drop")


class FaultSpecError(ValueError):
    """A fault rule the control API cannot accept."""


@dataclass(slots=True)
class FaultRule:
    """One injected fault; `times` counts down to removal (None: until cleared)."""

    path: re.Pattern[str]
    method: str | None = None
    status: int | None = None
    error_code: str | None = None
    message: str | None = None
    body: str | None = None  # raw, non-JSON body instead of the REST error array
    times: int | None = None
    probability: float = 1.0
    latency_ms: int = 0
    action: str = "respond"
    per_record: bool = False

    def matches(self, method: str, path: str) -> bool:
        """True when the rule applies to this request (method and path regex search)."""
        if self.method and self.method != "*" and self.method.upper() != method.upper():
            return False
        return self.path.search(path) is not None

    def api_error(self) -> ApiError:
        """The Salesforce error this rule answers with."""
        status = self.status or 503
        code = self.error_code or _DEFAULT_CODES.get(status, "UNKNOWN_EXCEPTION")
        message = self.message or _DEFAULT_MESSAGES.get(code, code)
        return ApiError(status, code, message)

    def describe(self) -> dict[str, Any]:
        """The rule as JSON, for the control API."""
        return {
            "method": self.method,
            "path": self.path.pattern,
            "status": self.status,
            "error_code": self.error_code,
            "message": self.message,
            "times": self.times,
            "probability": self.probability,
            "latency_ms": self.latency_ms,
            "action": self.action,
            "per_record": self.per_record,
        }


def parse_rule(spec: Mapping[str, Any]) -> FaultRule:
    """Build a rule from the control API's JSON; FaultSpecError names the bad key."""
    try:
        pattern = re.compile(str(spec.get("path", "")))
    except re.error as exc:
        raise FaultSpecError(f"path: not a regular expression: {exc}") from exc
    action = str(spec.get("action", "respond"))
    if action not in _ACTIONS:
        raise FaultSpecError(f"action: expected one of {_ACTIONS}")
    rule = FaultRule(
        path=pattern,
        method=_opt_str(spec, "method"),
        status=_opt_int(spec, "status"),
        error_code=_opt_str(spec, "error_code"),
        message=_opt_str(spec, "message"),
        body=_opt_str(spec, "body"),
        times=_opt_int(spec, "times"),
        probability=float(spec.get("probability", 1.0)),
        latency_ms=_opt_int(spec, "latency_ms") or 0,
        action=action,
        per_record=bool(spec.get("per_record", False)),
    )
    if not 0.0 <= rule.probability <= 1.0:
        raise FaultSpecError("probability: expected a number between 0 and 1")
    if rule.times is not None and rule.times < 1:
        raise FaultSpecError("times: expected a positive integer")
    if rule.status is not None and not 100 <= rule.status <= 599:
        raise FaultSpecError("status: expected an HTTP status code")
    return rule


def _opt_str(spec: Mapping[str, Any], key: str) -> str | None:
    value = spec.get(key)
    return None if value is None else str(value)


def _opt_int(spec: Mapping[str, Any], key: str) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise FaultSpecError(f"{key}: expected an integer") from exc


class FaultInjector:
    """The active rules; the first matching rule whose dice roll hits fires and uses up one of its times."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rules: list[FaultRule] = []
        self._rng = rng or random.Random()

    def add(self, rule: FaultRule) -> None:
        """Activate a rule (after the ones already active)."""
        self._rules.append(rule)

    def clear(self) -> int:
        """Remove every rule; returns how many there were."""
        count = len(self._rules)
        self._rules.clear()
        return count

    def rules(self) -> list[FaultRule]:
        """The active rules, in matching order."""
        return list(self._rules)

    def fire(self, method: str, path: str) -> FaultRule | None:
        """The rule that fires for this request, if any (consuming one of its times)."""
        for rule in self._rules:
            if not rule.matches(method, path):
                continue
            if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                continue
            if rule.times is not None:
                rule.times -= 1
                if rule.times <= 0:
                    self._rules.remove(rule)
            return rule
        return None
