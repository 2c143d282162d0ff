"""`mogli-bridge demo` prints at the terminal's width (it forced 200 columns), and wide into a pipe."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

from bridge.devtools.stack import ROOT


def test_the_demo_prints_at_the_terminals_width() -> None:
    """On a 120-column terminal no line of the demo's tables is wider than 120 columns (the lines that
    `setup` prints itself are not the demo's console)."""
    main, side = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge", "demo"],
        stdout=side,
        stderr=side,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm"},
    )
    os.close(side)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the demo closed its side
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    assert process.wait(timeout=110) == 0
    lines = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode()).replace("\r\n", "\n").splitlines()
    assert any("Each booking" in line for line in lines), "\n".join(lines)
    tables = [line for line in lines if line[:1] in "┃│┏┡└"]  # what the demo's console draws
    assert len(tables) > 10 and max(len(line) for line in tables) <= 120, "\n".join(tables)
