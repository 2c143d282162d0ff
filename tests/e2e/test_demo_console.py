"""`mogli-bridge demo` prints at the terminal's width (it forced 200 columns), and wide into a pipe."""

from __future__ import annotations

from bridge.devtools.terminal import on_a_terminal


def test_the_demo_prints_at_the_terminals_width() -> None:
    """On a 120-column terminal no line of the demo's tables is wider than 120 columns (the lines that
    `setup` prints itself are not the demo's console)."""
    code, text = on_a_terminal(["demo"], columns=120)
    assert code == 0
    lines = text.splitlines()
    assert any("Each booking" in line for line in lines), "\n".join(lines)
    tables = [line for line in lines if line[:1] in "┃│┏┡└"]  # what the demo's console draws
    assert len(tables) > 10 and max(len(line) for line in tables) <= 120, "\n".join(tables)
