"""A daemon's log is appended to across restarts: a line a kill cut mid-write is ended first."""

from __future__ import annotations

from pathlib import Path

from bridge.devtools.stack import end_torn_line


def test_a_torn_last_line_is_ended_and_a_whole_one_left_alone(tmp_path: Path) -> None:
    """A log ending mid-line gets its newline (the next run's first line starts on its own line); a log
    ending with a newline, an empty log and a missing one are left as they are."""
    torn, whole, empty = tmp_path / "torn.log", tmp_path / "whole.log", tmp_path / "empty.log"
    torn.write_bytes(b'{"event": "a"}\n{"event": "sync.act')
    whole.write_bytes(b'{"event": "a"}\n')
    empty.write_bytes(b"")
    for path in (torn, whole, empty, tmp_path / "missing.log"):
        end_torn_line(path)
    assert torn.read_bytes() == b'{"event": "a"}\n{"event": "sync.act\n'
    assert whole.read_bytes() == b'{"event": "a"}\n'
    assert empty.read_bytes() == b""
    assert not (tmp_path / "missing.log").exists()
