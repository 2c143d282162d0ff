"""`demo` and `bench` are developer tooling: without the `dev` extra they refuse in one line, exit 2."""

from __future__ import annotations

import importlib
import sys

import pytest

from bridge import cli

DEVTOOLS = [("demo", "bridge.devtools.demo", "run_demo"), ("bench", "bridge.devtools.bench", "run_bench")]


@pytest.mark.parametrize(("command", "module", "function"), DEVTOOLS)
def test_devtool_without_the_dev_extra_exits_2_with_one_line(
    command: str,
    module: str,
    function: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With pgserver missing (the dev extra not installed), the command never starts its tooling: it prints
    one line naming the extra to install and exits 2, no traceback."""
    monkeypatch.setitem(sys.modules, "pgserver", None)  # as if not installed: its import and find_spec fail

    def tooling(**options: object) -> int:
        raise AssertionError(f"{command} started without the dev extra")

    monkeypatch.setattr(importlib.import_module(module), function, tooling)

    assert cli.main([command]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "needs the dev extra: pip install 'mogli-bridge[dev]'" in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(("command", "module", "function"), DEVTOOLS)
def test_devtool_with_the_dev_extra_starts(
    command: str,
    module: str,
    function: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With the dev extra installed (as in the test environment), the guard lets the command start its
    tooling and returns the tooling's exit code."""
    started: list[dict[str, object]] = []

    def tooling(**options: object) -> int:
        started.append(options)
        return 0

    monkeypatch.setattr(importlib.import_module(module), function, tooling)

    assert cli.main([command]) == 0
    assert len(started) == 1
    assert "dev extra" not in capsys.readouterr().err
