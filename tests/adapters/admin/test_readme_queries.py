"""Every example query in the README's analyst section runs, as written, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import text

from bridge.ledger import make_engine, upgrade_to_head
from bridge.ledger.repository import Ledger
from tests.adapters.admin.filled import fill
from tests.adapters.ledger.factory import NOW

README = Path(__file__).resolve().parents[3] / "README.md"


def analyst_queries() -> list[str]:
    """The SQL statements of the `sql` blocks between the analyst heading and the next section."""
    body = README.read_text()
    section = body[body.index("## The ledger, for analysts") :]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```sql\n(.*?)```", section, flags=re.S)
    statements = []
    for block in blocks:
        lines = [line for line in block.splitlines() if not line.strip().startswith("--")]
        statements += [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]
    return statements


async def test_readme_example_queries_run_against_a_filled_ledger(ledger_url: str) -> None:
    """No example in the README is stale: each parses and runs against the current schema and answers rows."""
    queries = analyst_queries()
    assert len(queries) >= 7
    upgrade_to_head(ledger_url)
    repo = Ledger.from_url(ledger_url, clock=lambda: NOW)
    try:
        filled = await fill(repo)
    finally:
        repo.dispose()
    engine = make_engine(ledger_url)
    try:
        with engine.connect() as connection:
            for sql in queries:
                rows = connection.execute(text(sql), {"booking_id": filled.synced}).all()
                assert rows, f"no rows from: {sql}"
    finally:
        engine.dispose()
