"""The chaos report's Markdown table: every figure comes from the report, none is typed in."""

from __future__ import annotations

import json

from tests.chaos.table import table


def test_each_scenario_is_one_row_with_its_counted_figures() -> None:
    """Verdict figures fill their columns; every other counted figure lands in "what broke"."""
    report = [
        json.dumps(
            {
                "scenario": "kill_9",
                "kills_landed": 7,
                "fault_hits": {"/cometd drop": 3},
                "bookings": 1234,
                "lost": 1,
                "doubled": 2,
                "differences": 5,
                "drift_found_by_dry_run": 3,
                "daemon_reconciliation_repairs": 4,
            }
        ),
        "",
    ]
    lines = table(report).splitlines()
    assert len(lines) == 3
    assert lines[2] == ("| kill 9 | kills landed: 7; fault hits: /cometd drop 3 | 1,234 | 1 | 2 | 3 | 4 |")
