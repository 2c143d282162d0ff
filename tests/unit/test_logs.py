"""Logging: configured secrets never reach a log line."""

from __future__ import annotations

import json

import pytest
import structlog

from bridge.logs import REDACTED, SecretScrubber, configure_logging


def test_scrubber_replaces_secrets_anywhere_in_the_event() -> None:
    """Secret values are replaced in strings, nested dicts and lists."""
    scrub = SecretScrubber(["tok-123456", "pw-abcdef", ""])
    event = {"event": "x", "url": "https://h/?t=tok-123456", "nested": {"a": ["pw-abcdef", 3]}, "n": 5}
    out = scrub(None, "info", event)
    assert out["url"] == f"https://h/?t={REDACTED}"
    assert out["nested"] == {"a": [REDACTED, 3]}
    assert out["n"] == 5


def test_json_lines_off_a_terminal_without_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    """Off a terminal every line is JSON with level and timestamp, and secrets are scrubbed."""
    configure_logging("info", "json", secrets=["very-secret-token"])
    structlog.get_logger("t").info("test.event", detail="Bearer very-secret-token")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["event"] == "test.event" and record["level"] == "info" and "timestamp" in record
    assert "very-secret-token" not in line
    structlog.reset_defaults()
