"""config/mogli-bridge.service: runs the daemon unprivileged, restarts sensibly and is hardened."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bridge.supervisor import SHUTDOWN_GRACE_SECONDS

UNIT = Path(__file__).resolve().parents[2] / "config" / "mogli-bridge.service"


def directives() -> dict[str, list[str]]:
    """Every `Key=value` of the unit, by key (a key may repeat)."""
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_runs_the_daemon_in_the_foreground_as_a_system_user() -> None:
    """ExecStart is `mogli-bridge --config ... run`; the user is not root; secrets come from an env file."""
    d = directives()
    [start] = d["ExecStart"]
    assert start.endswith(" run") and "--config /etc/mogli-bridge/bridge.toml" in start
    assert d["User"] == ["mogli-bridge"] and d["Type"] == ["exec"]
    assert d["EnvironmentFile"] == ["-/etc/mogli-bridge/secrets.env"]
    assert "ExecStartPre" not in d  # setup must not silently recreate a lost slot


def test_unit_stops_gracefully_and_does_not_loop_on_configuration_errors() -> None:
    """SIGTERM with more time than the daemon's drain grace; restart on failure but not on exit 2."""
    d = directives()
    assert d["KillSignal"] == ["SIGTERM"]
    assert int(d["TimeoutStopSec"][0]) > SHUTDOWN_GRACE_SECONDS
    assert d["Restart"] == ["on-failure"] and d["RestartPreventExitStatus"] == ["2"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("ProtectSystem", "strict"),
        ("ReadWritePaths", "/var/lib/mogli-bridge"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("UMask", "0077"),
    ],
)
def test_unit_is_hardened(key: str, value: str) -> None:
    """Each sandboxing directive is set as documented."""
    assert value in directives()[key]


def test_unit_holds_no_secret() -> None:
    """No secret-looking key is set in the unit itself."""
    text = UNIT.read_text().lower()
    for needle in ("password=", "client_secret", "token=", "refresh_token"):
        assert needle not in text


def test_unit_passes_systemd_analyze_where_available(tmp_path: Path) -> None:
    """`systemd-analyze verify` finds no syntax error (skipped where systemd is absent)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    copy = tmp_path / "mogli-bridge.service"
    copy.write_text(UNIT.read_text())
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    syntax = [line for line in result.stderr.splitlines() if "Unknown key" in line or "Invalid" in line]
    assert syntax == []
