"""A throwaway private PostgreSQL cluster (wal_level=logical) for tests, the demo and the benchmark.

It runs initdb and pg_ctl itself, on its own port and data directory, as an unprivileged OS user when the
process runs as root. Binaries come from the system (`/usr/lib/postgresql/*/bin`, newest first) or from the
`pgserver` wheel; only its binaries are used, never its server manager.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

RUN_AS = "postgres"
# What a crash needs to lose no committed transaction (the defaults below turn them off for speed).
CRASH_SAFE: dict[str, str | int] = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
RECOVERY_LINE = "automatic recovery in progress"


def system_bindirs() -> list[Path]:
    """Debian's PostgreSQL binary directories, newest version first."""
    root = Path("/usr/lib/postgresql")
    if not root.is_dir():
        return []
    found = [p / "bin" for p in root.iterdir() if (p / "bin" / "initdb").exists()]
    return sorted(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)


def pgserver_bindir() -> Path | None:
    """The binaries bundled in the `pgserver` wheel, when installed."""
    import importlib.util

    # Locate the wheel without importing it: importing pgserver sets up its server manager (unused here).
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        return None
    bindir = Path(spec.origin).parent / "pginstall" / "bin"
    return bindir if (bindir / "initdb").exists() else None


def available_bindirs() -> list[Path]:
    """Every usable binary directory: the system's first, then pgserver's."""
    dirs = system_bindirs()
    bundled = pgserver_bindir()
    if bundled is not None:
        dirs.append(bundled)
    return dirs


def find_bindir() -> Path:
    """The binary directory to use: `$PG_BINDIR`, the system's newest, else pgserver's."""
    env = os.environ.get("PG_BINDIR")
    if env:
        return Path(env)
    dirs = available_bindirs()
    if not dirs:
        raise RuntimeError("no PostgreSQL binaries found: install postgresql or `pip install pgserver`")
    return dirs[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", name], check=True, capture_output=True)
        return pwd.getpwnam(name)


def _make_readable(path: Path) -> None:
    """Let the unprivileged server user reach bundled binaries under a root-owned tree."""
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        if not mode & 0o005:
            p.chmod(mode | 0o005)


class LocalPostgres:
    """A private cluster: `start()`, `dsn()`, `create_database()`, `stop()`."""

    def __init__(
        self, bindir: Path | None = None, base: Path | None = None, port: int | None = None, **conf: str | int
    ) -> None:
        self.bindir = Path(bindir) if bindir else find_bindir()
        self.base = Path(base) if base else Path(tempfile.mkdtemp(prefix="mogli-pg-"))
        self.data = self.base / "data"
        self.port = port or free_port()
        self.run_as = RUN_AS if os.geteuid() == 0 else None
        self.conf: dict[str, str | int] = {
            "wal_level": "logical",
            "max_replication_slots": 20,
            "max_wal_senders": 20,
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.base}'",
            "port": self.port,
            "wal_sender_timeout": "'30s'",
            "max_connections": 100,
            **conf,
        }
        self.started = False

    @property
    def version(self) -> int:
        """Major version of the binaries."""
        out = subprocess.run([str(self.bindir / "postgres"), "--version"], capture_output=True, text=True)
        return int(out.stdout.split()[-1].split(".")[0])

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)

            def demote() -> None:
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)

            kwargs = {
                "preexec_fn": demote,
                "env": {**os.environ, "HOME": str(self.base)},
                "cwd": str(self.base),
            }
        return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]

    def start(self) -> LocalPostgres:
        """initdb (first time) and start the server; returns self."""
        if self.run_as:
            pw = _ensure_user(self.run_as)
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            self.base.chmod(0o755)
            _make_readable(self.bindir)
        if not (self.data / "PG_VERSION").exists():
            self._run(
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            )
            with (self.data / "postgresql.conf").open("a") as fh:
                fh.writelines(f"{k} = {v}\n" for k, v in self.conf.items())
            with (self.data / "pg_hba.conf").open("a") as fh:
                fh.write("host replication all 127.0.0.1/32 trust\n")
        self._pg_ctl_start()
        self.started = True
        return self

    def _pg_ctl_start(self) -> None:
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.base / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def restart(self, mode: str = "fast") -> None:
        """Stop and start again (same port, same data)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        self._pg_ctl_start()

    def crash(self) -> None:
        """Stop as a crash would (`pg_ctl stop -m immediate`: no checkpoint), keeping the data directory;
        the next `start()` runs crash recovery."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def recoveries(self) -> int:
        """How many times the server log says it recovered from a crash."""
        return self.logged(RECOVERY_LINE)

    def logged(self, text: str) -> int:
        """How many times `text` appears in the server log (e.g. "database system is shut down")."""
        log = self.base / "server.log"
        return log.read_text(errors="replace").count(text) if log.exists() else 0

    def setting(self, name: str) -> str:
        """The running server's value of one setting (`SHOW name`)."""
        import psycopg2

        conn = psycopg2.connect(self.dsn())
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_setting(%s)", (name,))
                row = cur.fetchone()
        finally:
            conn.close()
        assert row is not None
        return str(row[0])

    def stop(self, remove: bool = True, mode: str = "immediate") -> None:
        """Stop the server (immediately unless told `fast`) and, by default, delete its files."""
        if self.started:
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
            self.started = False
        if remove:
            shutil.rmtree(self.base, ignore_errors=True)

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq URL for a database of this cluster."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Create a database and return its DSN."""
        import psycopg2

        conn = psycopg2.connect(self.dsn())
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.dsn(name)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running(**kwargs: object) -> Iterator[LocalPostgres]:
    """Context manager around a started LocalPostgres."""
    pg = LocalPostgres(**kwargs)  # type: ignore[arg-type]
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()
