"""Chaos fixtures: the end-to-end stacks, and how long to run (`MOGLI_CHAOS=long` for `make chaos`)."""

from __future__ import annotations

import os

import pytest

from tests.e2e.conftest import stack
from tests.e2e.inbound_support import inbound_stack, transport

LONG = os.environ.get("MOGLI_CHAOS") == "long"
KILL_CYCLES = 20 if LONG else 5
OPERATIONS = 3000 if LONG else 600

__all__ = ["KILL_CYCLES", "LONG", "OPERATIONS", "inbound_stack", "org_overrides", "stack", "transport"]


@pytest.fixture
def org_overrides() -> dict[str, str]:
    """A daily delivery allocation that twenty restarts of replays cannot exhaust (a real org's is larger
    than a developer org's 10,000; running out is its own test in the emulator suite)."""
    return {"daily_delivered_events": "10000000"}
