"""The product as a user installs it: a wheel built from this checkout, installed (not editable, without the
dev extra) into a fresh venv and run from outside the repository with a clean environment: `setup`,
`emulator`, `run` and `status` all work from the installed files alone."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from bridge.devtools.localpg import free_port
from bridge.devtools.stack import HttpError, http_json, wait_until, write_config
from bridge.ledger.migrate import current_revision, head_revision
from bridge.source.setup import drop_slot

ROOT = Path(__file__).resolve().parents[2]

# Building the wheel and installing its dependencies into a fresh venv takes about 40 s of the first test.
pytestmark = pytest.mark.timeout(300)


@dataclass(frozen=True)
class Installed:
    """A fresh venv holding the built wheel, and where and how its commands run."""

    venv: Path
    cwd: Path
    env: dict[str, str]

    def argv(self, *args: str) -> list[str]:
        """The installed console script with these arguments."""
        return [str(self.venv / "bin" / "mogli-bridge"), *args]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run one command to its end."""
        return subprocess.run(
            self.argv(*args), capture_output=True, text=True, cwd=self.cwd, env=self.env, timeout=timeout
        )

    def start(self, log: Path, *args: str) -> subprocess.Popen[bytes]:
        """Start a long-running command, its output to `log`."""
        with log.open("ab") as out:
            return subprocess.Popen(
                self.argv(*args), stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd, env=self.env
            )


def _build_wheel(work: Path) -> Path:
    """`pip wheel` on a copy of the project (a build writes build/ and *.egg-info beside its sources)."""
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("bridge", "migrations"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    dist = work / "dist"
    building = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert building.returncode == 0, building.stderr[-3000:]
    (wheel,) = dist.glob("mogli_bridge-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel, installed with its runtime dependencies only into a venv of its own."""
    work = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(work)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=60)
    installing = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert installing.returncode == 0, installing.stderr[-3000:]
    cwd = work / "elsewhere"
    cwd.mkdir()
    assert not cwd.resolve().is_relative_to(ROOT.resolve())
    # Nothing may lead the installed interpreter back to the checkout or this test's venv.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "MOGLI_BRIDGE"))}
    env["PYTHONNOUSERSITE"] = "1"
    return Installed(venv=venv, cwd=cwd, env=env)


@dataclass(frozen=True)
class WheelStack:
    """An emulator started from the wheel, a fresh scheduling database and a config naming both."""

    installed: Installed
    workdir: Path
    emulator_url: str
    dsn: str
    ledger_url: str
    config: Path

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A command of the installed wheel with this stack's config."""
        return self.installed.run("--config", str(self.config), *args)


def _log_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            obj = json.loads(line)
            if isinstance(obj, dict):
                lines.append(obj)
    return lines


@contextlib.contextmanager
def _process(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """Stop the process at the end if the test left it running."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(15)


def _start_emulator(installed: Installed, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / "emulator.log"
    proc = installed.start(log, "emulator", "--port", str(port))

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the emulator exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            return http_json("GET", f"{url}/__emulator/stats", timeout=2)[0] == 200
        except (OSError, HttpError):
            return False

    wait_until(up, timeout=60, what="the installed emulator to answer")
    return proc, url


@pytest.fixture
def wheel_stack(installed: Installed, tmp_path: Path, pg_database: str) -> Iterator[WheelStack]:
    """The installed emulator and an empty scheduling database (the slot dropped afterwards)."""
    slot = "mb_" + pg_database.rsplit("/", 1)[1]
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    proc, url = _start_emulator(installed, tmp_path)
    with _process(proc):
        config = write_config(
            tmp_path / "bridge.toml", dsn=pg_database, ledger_url=ledger_url, emulator_url=url, slot=slot
        )
        try:
            yield WheelStack(installed, tmp_path, url, pg_database, ledger_url, config)
        finally:
            drop_slot(pg_database, slot)


def _set_up(stack: WheelStack) -> None:
    result = stack.command("setup", "--create-demo-schema")
    assert result.returncode == 0, result.stdout + result.stderr


@contextlib.contextmanager
def _daemon(stack: WheelStack) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`run` from the wheel, waited for until it logs daemon.started."""
    log = stack.workdir / "daemon.log"
    proc = stack.installed.start(log, "--config", str(stack.config), "run")
    with _process(proc):

        def started() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the daemon exited {proc.returncode}: {log.read_text()[-3000:]}")
            return any(
                line.get("event") == "daemon.started" and line.get("pid") == proc.pid
                for line in _log_lines(log)
            )

        wait_until(started, timeout=60, what="the installed daemon to log daemon.started")
        yield proc, log


def test_installed_wheel_runs_from_its_own_files(installed: Installed) -> None:
    """The installed package, its Alembic scripts and its scheduler schema come from the venv, nothing from
    the checkout; pgserver (the dev extra) is not installed, and `demo` says so in one line, exit 2."""
    probe = (
        "import importlib.util, json, sys; from importlib import resources; import bridge; print(json.dumps({"
        "'bridge': bridge.__file__, 'migrations': str(resources.files('bridge._migrations')), "
        "'schema': str(resources.files('bridge.schema') / 'scheduler_schema.sql'), "
        "'pgserver': importlib.util.find_spec('pgserver') is not None, 'path': sys.path}))"
    )
    found = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c", probe],
        capture_output=True,
        text=True,
        cwd=installed.cwd,
        env=installed.env,
        timeout=60,
    )
    assert found.returncode == 0, found.stderr[-3000:]
    where = json.loads(found.stdout)
    venv = installed.venv.resolve()
    for name in ("bridge", "migrations", "schema"):
        assert Path(where[name]).resolve().is_relative_to(venv), (name, where[name])
    assert Path(where["migrations"], "env.py").is_file()
    assert (
        Path(where["schema"]).read_bytes()
        == (ROOT / "bridge" / "schema" / "scheduler_schema.sql").read_bytes()
    )
    assert not any(entry and Path(entry).resolve().is_relative_to(ROOT.resolve()) for entry in where["path"])
    assert where["pgserver"] is False

    demo = installed.run("demo")
    assert demo.returncode == 2
    assert demo.stderr.strip().splitlines() == [
        "configuration error: `mogli-bridge demo` needs the dev extra: pip install 'mogli-bridge[dev]'"
    ]


def test_installed_emulator_answers_its_health_route(installed: Installed, tmp_path: Path) -> None:
    """`mogli-bridge emulator` from the wheel starts, answers its control API's stats route and lists the
    REST API versions it speaks."""
    proc, url = _start_emulator(installed, tmp_path)
    with _process(proc):
        status, stats = http_json("GET", f"{url}/__emulator/stats")
        assert status == 200 and isinstance(stats, dict)
        _, versions = http_json("GET", f"{url}/services/data")
        assert versions and all(v["url"].startswith("/services/data/v") for v in versions)


def test_installed_setup_migrates_a_fresh_ledger(wheel_stack: WheelStack) -> None:
    """`mogli-bridge setup --create-demo-schema` from the wheel migrates a fresh SQLite ledger to the head
    revision (the Alembic scripts shipped in the wheel) and creates the scheduler schema (the SQL shipped in
    the wheel) in an empty PostgreSQL database, then its publication and slot."""
    assert current_revision(wheel_stack.ledger_url) is None

    result = wheel_stack.command("setup", "--create-demo-schema")

    assert result.returncode == 0, result.stdout + result.stderr
    assert current_revision(wheel_stack.ledger_url) == head_revision()
    conn = psycopg2.connect(wheel_stack.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'scheduler' "
                "AND table_name IN ('users', 'scheduling_links', 'bookings')"
            )
            assert cur.fetchone() == (3,)
    finally:
        conn.close()


def test_installed_daemon_starts_and_stops_on_sigterm(wheel_stack: WheelStack) -> None:
    """`mogli-bridge run` from the wheel starts (logs daemon.started as a JSON line) and, on SIGTERM, stops
    (logs daemon.stopped) with exit code 0."""
    _set_up(wheel_stack)
    with _daemon(wheel_stack) as (proc, log):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    events = [line.get("event") for line in _log_lines(log)]
    assert events.index("daemon.started") < events.index("daemon.stopped")


def test_installed_status_reports_the_running_daemon(wheel_stack: WheelStack) -> None:
    """`mogli-bridge status --json` from the wheel, beside the wheel's running daemon, reads the ledger and
    the source and reaches the daemon; exit 0."""
    _set_up(wheel_stack)
    with _daemon(wheel_stack) as (proc, log):
        status = wheel_stack.command("status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        assert report["ledger"]["reachable"] is True and report["source"]["reachable"] is True
        assert report["daemon"]["running"] is True
        assert report["source"]["slot_exists"] is True
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
