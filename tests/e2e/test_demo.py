"""The demo a new user runs first works from start to finish, hands the running stack over, and stops all
of it."""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from bridge.devtools.stack import ROOT, http_json

HANDOVER_END = "Ctrl-C or `kill"  # the hand-over's last line begins so


CUSTOMERS = ("Acme Dental", "Globex Clinics", "Initech Tutors")
PAUSED = "Globex Clinics"
CLEAN = "clean: nothing lost, doubled or cross-org"


def _org_table(stdout: str) -> dict[str, list[str]]:
    """The cells of the demo's side-by-side table, by its first cell (the org's name, or 'all orgs')."""
    part = stdout.split("Every org side by side", 1)[1]
    rows: dict[str, list[str]] = {}
    for line in part.splitlines()[1:]:
        if line.startswith("└"):
            break
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            rows[cells[0]] = cells[1:]
    return rows


def test_demo_runs_and_reports_agreement() -> None:
    """`mogli-bridge demo` books on every link type in the default org and three customer orgs; half-way one
    org's integration user is deactivated: that org shows paused with the refused token as its reason and its
    bookings wait while every other org's go out; reactivated, it resumes by itself. At the end each org's
    row counts add up (bookings = Events + cancelled, the total row their sum), every org's verdict is clean,
    scheduler, ledger and Salesforce agree, and the `orgs` table lists every org."""
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "demo"], capture_output=True, text=True, cwd=ROOT, timeout=110
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "scheduler, ledger and Salesforce agree in 4 orgs" in text, text[-3000:]
    for label in (
        "1:1 with a Contact",
        "round robin with a Lead",
        "round robin for an Account",
        "RSVP attendee 3",
    ):
        assert label in text

    paused = re.search(rf"^\s*{PAUSED}: paused - (.+)$", text, re.MULTILINE)
    assert paused and "token" in paused.group(1), text[-4000:]
    going = re.search(r"^\s*(\d+) of their (\d+) new bookings are in their Salesforce", text, re.MULTILINE)
    assert going and going.group(1) == going.group(2) and int(going.group(1)) > 0, text[-4000:]
    waiting = re.search(r"its (\d+) new bookings wait in the ledger \(pending\)", text)
    assert waiting and int(waiting.group(1)) > 0, text[-4000:]
    states = re.search(r"^\s*states: (.+)$", text, re.MULTILINE)
    assert states, text[-4000:]
    shown = dict(part.rsplit(" ", 1) for part in states.group(1).split(", "))
    assert shown == {"default org": "active", **{c: "paused" if c == PAUSED else "active" for c in CUSTOMERS}}
    resumed = re.search(rf"^\s*{PAUSED}: resumed - its (\d+) waiting bookings are synced", text, re.MULTILINE)
    assert resumed and resumed.group(1) == waiting.group(1), text[-4000:]
    assert text.index(paused.group(0)) < text.index(resumed.group(0))

    table = _org_table(text)
    assert set(table) == {"default org", *CUSTOMERS, "all orgs"}, table
    orgs = {name: cells for name, cells in table.items() if name != "all orgs"}
    for name, (state, bookings, cancelled, events, moglis, ledger, verdict) in orgs.items():
        assert state == "active" and ledger == "agrees" and verdict == "clean", (name, table[name])
        assert int(bookings) == int(events) + int(cancelled) and int(moglis) == 3, (name, table[name])
    for column in range(1, 5):  # bookings, cancelled, Events, Mogli Events
        assert int(table["all orgs"][column]) == sum(int(cells[column]) for cells in orgs.values()), table
    assert "cross-org verdict over 4 orgs: lost 0, doubled 0, wrong 0, cross-org 0, orphans 0 - clean" in text
    assert CLEAN in " ".join(text.split()), "the table's caption says what its verdict 'clean' means"

    listing = text.split("==> mogli-bridge orgs", 1)[1]
    for name in ("default", *CUSTOMERS):
        assert re.search(rf"{name}\s+active", listing), listing


# -- processes, read from /proc: (pid, start time) names one process even if its pid is reused later


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ..., starttime is the 20th
    return int(fields[1]), fields[0], int(fields[19])


def _children() -> dict[int, list[int]]:
    """Every process's children, by parent pid."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append(int(entry.name))
    return children


def _tree(*roots: int) -> dict[int, int]:
    """The roots and all their descendants: pid -> start time."""
    children, found, todo = _children(), {}, list(roots)
    while todo:
        pid = todo.pop()
        if (stat := _stat(pid)) is not None and pid not in found:
            found[pid] = stat[2]
            todo.extend(children.get(pid, []))
    return found


def _still_running(processes: dict[int, int]) -> list[str]:
    """Those of `processes` that still run (a zombie has ended; only its parent has not yet reaped it)."""
    running = []
    for pid, started in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[2] == started and stat[1] != "Z":
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            running.append(f"{pid}: {command!r}")
    return running


# -- the demo as a real process


class RunningDemo:
    """`mogli-bridge demo` as a real process in its own process group (as a shell runs a foreground job),
    its output read line by line as it comes."""

    def __init__(self, *options: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "demo", *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            process_group=0,
        )
        self.pid = self.proc.pid
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def read_until(self, marker: str, timeout: float) -> str:
        """The output up to and including the first line that contains `marker`."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {marker!r} after {timeout:.0f}s: {''.join(seen)[-3000:]}") from None
            if line is None:
                raise AssertionError(
                    f"demo exited {self.proc.wait()} before {marker!r}: {''.join(seen)[-3000:]}"
                )
            seen.append(line)
            if marker in line:
                return "".join(seen)

    def stop(self, stop_signal: signal.Signals) -> tuple[int, str]:
        """Send `stop_signal` (SIGINT to the whole group, as a terminal's Ctrl-C does; any other to the demo's
        pid, as `kill` does); the exit code and the rest of the output."""
        if stop_signal == signal.SIGINT:
            os.killpg(self.pid, stop_signal)
        else:
            self.proc.send_signal(stop_signal)
        code = self.proc.wait(timeout=90)
        self._reader.join(timeout=10)
        rest = []
        while (line := self._lines.get(timeout=1)) is not None:
            rest.append(line)
        return code, "".join(rest)

    def close(self) -> None:
        """When a test failed early: let the demo stop what it started, else kill it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _line(handover: str, name: str) -> str:
    """What follows `name` on its hand-over line."""
    found = re.search(rf"^\s*{name}\s+(.+)$", handover, re.MULTILINE)
    assert found, f"no {name!r} line in the hand-over:\n{handover}"
    return found.group(1)


def _kept_daemon_log(after: str) -> str:
    """The last lines of the daemon's log, when the demo kept its files (its daemon had to be killed)."""
    kept = re.search(r"logs are kept in (\S+)", after)
    if kept is None:
        return ""
    path = Path(kept.group(1)) / "daemon.log"
    lines = path.read_text(errors="replace").splitlines()[-40:] if path.exists() else ["(no daemon.log)"]
    shutil.rmtree(kept.group(1), ignore_errors=True)
    return "\n--- the daemon's log, last lines ---\n" + "\n".join(lines)


def _assert_stopped_in_order(after: str, *, starting: bool = False) -> None:
    """The demo reported stopping the daemon (a clean drain), then the emulator, then PostgreSQL. A daemon
    still `starting` may also end by the signal itself (exit -15): SIGTERM reached it while the interpreter
    was loading, before `run` installs its handler, when it had taken no lock and read nothing yet."""
    daemon = re.search(r"stopped the daemon \(exit (-?\d+)\)", after)
    assert daemon is not None, after + _kept_daemon_log(after)
    assert daemon.group(1) == "0" or (starting and daemon.group(1) == "-15"), after
    order = [daemon.start(), after.find("stopped the emulator"), after.find("stopped PostgreSQL")]
    assert -1 not in order and order == sorted(order), after


@pytest.mark.timeout(240)
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_kept_running_demo_hands_over_the_stack_and_a_signal_stops_everything(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    """`demo --keep-running` prints the status page, the token, one line to paste and each customer org's
    own URL (its Events there) and status page (naming it); `status` run with exactly that line reaches the
    ready daemon; SIGTERM (to the demo's pid, as `kill`) or SIGINT (to its
    process group, as Ctrl-C) then stops the daemon, the emulator and PostgreSQL in that order, the demo exits
    0, and no process it started is left, nor its config."""
    demo = RunningDemo("--keep-running")
    try:
        handover = demo.read_until(HANDOVER_END, timeout=150)
        paste = re.search(r"^\s*(export MOGLI_BRIDGE_CONFIG=\S+)\s*$", handover, re.MULTILINE)
        assert paste, f"no line to paste in the hand-over:\n{handover}"
        named = dict(re.findall(r"(\w+) (\d+)", _line(handover, "processes")))
        assert set(named) >= {"demo", "daemon", "emulator", "PostgreSQL"}, handover
        assert int(named["demo"]) == demo.pid
        postgres = int(named["PostgreSQL"])
        started = _tree(demo.pid, postgres)
        assert {int(named["daemon"]), int(named["emulator"]), postgres} <= set(started), handover

        # Exactly the pasted line, from a folder with no config/ of its own and no other bridge settings.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOGLI_BRIDGE_")}
        status = subprocess.run(
            ["bash", "-c", f'{paste.group(1)} && exec "$0" -m bridge status --json', sys.executable],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=60,
        )
        assert status.returncode == 0, status.stdout[-2000:] + status.stderr[-2000:]
        assert json.loads(status.stdout)["summary"]["daemon"] == "ready", status.stdout[-2000:]

        page = _line(handover, "status page").split()[0]
        token = _line(handover, "admin token").split()[0]
        assert http_json("GET", page.rstrip("/") + "/healthz")[0] == 200
        customers = re.findall(
            r"^\s*org\s+(.+?)\s+(http://\S+).*\n\s+its status page\s+(\S+)$", handover, re.MULTILINE
        )
        assert [name for name, _, _ in customers] == list(CUSTOMERS), handover
        for name, url, org_page in customers:
            events = http_json("GET", f"{url}/__emulator/records/Event")[1]["records"]
            assert events, f"{name}'s own Salesforce at {url} holds none of its Events"
            with urllib.request.urlopen(org_page, timeout=10) as answer:
                assert answer.status == 200 and name in answer.read().decode(), org_page
        code, body = http_json(
            "GET", page.rstrip("/") + "/api/status", headers={"Authorization": f"Bearer {token}"}
        )
        assert code == 200 and body["ready"] is True, body

        exit_code, after = demo.stop(stop_signal)
        assert exit_code == 0, after
        _assert_stopped_in_order(after)
        assert _still_running(started) == [], f"left running after the demo stopped:\n{after}"
        config = Path(shlex.split(paste.group(1))[1].split("=", 1)[1])
        assert not config.exists(), "the demo's config outlived the demo"
    finally:
        demo.close()


@pytest.mark.timeout(180)
def test_a_demo_stopped_while_it_starts_stops_what_it_had_started() -> None:
    """SIGTERM while the demo is still booking (not yet at its verdict) stops the daemon, the emulator and
    PostgreSQL it had started, in that order; the demo exits 0 and no process it started is left."""
    demo = RunningDemo()
    try:
        seen = demo.read_until("the daemon runs as pid", timeout=120)
        pids = [int(pid) for pid in re.findall(r"runs as pid (\d+)", seen)]
        assert len(pids) == 3, seen  # PostgreSQL, the emulator, the daemon
        started = _tree(demo.pid, *pids)
        assert set(pids) <= set(started), seen

        exit_code, after = demo.stop(signal.SIGTERM)
        assert exit_code == 0, after
        assert "invariant check" not in after, "the demo finished before the signal: nothing was interrupted"
        assert "SIGTERM: stopping" in after, after
        _assert_stopped_in_order(after, starting=True)
        assert _still_running(started) == [], f"left running after the demo stopped:\n{after}"
    finally:
        demo.close()


@pytest.mark.timeout(180)
def test_a_demo_stopped_while_an_org_is_paused_drains_and_stops_everything() -> None:
    """SIGTERM while one org is paused (its integration user deactivated, its bookings waiting): the daemon
    still drains and exits 0, then the emulator and PostgreSQL stop, the demo exits 0 without its verdict,
    and no process it started is left."""
    demo = RunningDemo()
    try:
        seen = demo.read_until(f"{PAUSED}: paused", timeout=120)
        pids = [int(pid) for pid in re.findall(r"runs as pid (\d+)", seen)]
        assert len(pids) == 3, seen  # PostgreSQL, the emulator, the daemon
        started = _tree(demo.pid, *pids)

        exit_code, after = demo.stop(signal.SIGTERM)
        assert exit_code == 0, after
        assert "invariant check" not in after, "the demo finished before the signal: nothing was interrupted"
        _assert_stopped_in_order(after)
        assert _still_running(started) == [], f"left running after the demo stopped:\n{after}"
    finally:
        demo.close()
