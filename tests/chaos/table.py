"""Render the chaos report (JSON lines, one object per scenario) as the README's Markdown table.

`make chaos` prints it after the run: `python -m tests.chaos.table var/chaos-report.jsonl`. Every figure comes
from the report, which the scenarios count; nothing here is typed in by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

VERDICT = (
    "bookings",
    "lost",
    "doubled",
    "differences",
    "drift_found_by_dry_run",
    "daemon_reconciliation_repairs",
)
HEADER = (
    "| scenario | what broke (counted) | bookings | lost | doubled | dry-run drift "
    "| repaired by the daemon |\n"
    "|---|---|---|---|---|---|---|"
)


def _what_broke(figures: dict[str, Any]) -> str:
    """Every figure but the verdict's, as `name: value` pairs (nested maps flattened)."""
    parts: list[str] = []
    for key, value in figures.items():
        if key in (*VERDICT, "scenario"):
            continue
        if isinstance(value, dict):
            inner = ", ".join(f"{k} {v:,}" for k, v in value.items())
            parts.append(f"{key.replace('_', ' ')}: {inner}")
        else:
            parts.append(
                f"{key.replace('_', ' ')}: {value:,}" if isinstance(value, int) else f"{key}: {value}"
            )
    return "; ".join(parts)


def row(figures: dict[str, Any]) -> str:
    """One scenario's table row."""
    verdict = [
        f"{int(figures[k]):,}" if k in figures else "not counted" for k in VERDICT if k != "differences"
    ]
    return (
        f"| {figures['scenario'].replace('_', ' ')} | {_what_broke(figures)} | " + " | ".join(verdict) + " |"
    )


def table(lines: list[str]) -> str:
    """The Markdown table of every scenario in the report."""
    rows = [row(json.loads(line)) for line in lines if line.strip()]
    return "\n".join([HEADER, *rows])


def main(argv: list[str]) -> int:
    """Print the table of the report named on the command line."""
    print(table(Path(argv[1]).read_text().splitlines()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
