"""A `mogli-bridge` command run on a pseudo-terminal of a given width: what an operator would see."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence

from bridge.devtools.stack import ROOT

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def on_a_terminal(
    args: Sequence[str], *, columns: int, env: Mapping[str, str] | None = None, timeout: float = 110
) -> tuple[int, str]:
    """`python -m bridge ARGS` with stdout and stderr on a pty `columns` wide: (exit code, the text shown,
    ANSI codes removed, line ends as `\\n`; a progress bar's redraws stay as `\\r`)."""
    main, side = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge", *args],
        stdout=side,
        stderr=side,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": str(columns), "LINES": "40", "TERM": "xterm", **(env or {})},
    )
    os.close(side)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the command closed its side
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    return process.wait(timeout=timeout), _ANSI.sub("", shown.decode()).replace("\r\n", "\n")
