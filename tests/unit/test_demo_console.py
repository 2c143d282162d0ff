"""The demo's console follows the terminal instead of forcing a width."""

from __future__ import annotations

import importlib

import pytest

import bridge.devtools.demo as demo


@pytest.mark.parametrize("columns", [80, 120])
def test_the_demo_prints_at_the_terminals_width(monkeypatch: pytest.MonkeyPatch, columns: int) -> None:
    """With the terminal `columns` wide, the demo's console is that wide (it forced 200 columns)."""
    monkeypatch.setenv("COLUMNS", str(columns))
    try:
        assert importlib.reload(demo).console.width == columns
    finally:
        monkeypatch.delenv("COLUMNS")
        importlib.reload(demo)
