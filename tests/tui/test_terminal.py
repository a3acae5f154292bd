"""`lvstop --demo` in a real pseudo-terminal: SIGTERM and SIGHUP leave the terminal usable."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What Textual writes when it takes the terminal, and what undoes it.
LEAVE_ALT_SCREEN, SHOW_CURSOR, MOUSE_OFF = b"\x1b[?1049l", b"\x1b[?25h", b"\x1b[?1000l"


def read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while marker not in buf and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.05)[0]:
            try:
                buf += os.read(fd, 65536)
            except OSError:
                break
    return buf


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signal_restores_the_terminal(sig: signal.Signals) -> None:
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lvstop", "--demo"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    os.close(slave)
    try:
        shown = read_until(master, b"demo-director", 30)
        assert b"demo-director" in shown, shown[-500:]
        proc.send_signal(sig)
        tail = b""  # everything it writes on its way out, read as a terminal would while it exits
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            tail += read_until(master, b"never", 0.1)
        tail += read_until(master, b"never", 0.5)
        status = proc.wait(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert status == 128 + sig
    assert LEAVE_ALT_SCREEN in tail and SHOW_CURSOR in tail and MOUSE_OFF in tail
    assert b"Traceback" not in shown + tail


def test_replay_from_the_command_line_and_quit(tmp_path: Path) -> None:
    """`lvstop record` then `lvstop --replay FILE`: the playback shows in the header, at the recorded
    pace (1 s, not the default 2 s); q quits cleanly."""
    rec = tmp_path / "demo.jsonl.gz"
    subprocess.run(
        [sys.executable, "-m", "lvstop", "record", "--demo", "--interval", "1", "--count", "3", str(rec)],
        cwd=ROOT, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "30"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lvstop", "--replay", str(rec)],
        stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    try:
        shown = read_until(master, b"replay 1/3", 30)
        assert b"replay 1/3" in shown, shown[-800:]
        shown = read_until(master, b"replay 3/3", 10)
        assert b"replay 3/3" in shown and b"end" in shown, shown[-800:]
        os.write(master, b"q")
        tail = read_until(master, LEAVE_ALT_SCREEN, 10)
        status = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert status == 0 and LEAVE_ALT_SCREEN in tail


# The app crashes on space and a non-daemon thread never ends, as a worker stuck on a lock would:
# the interpreter then waits for that thread at exit.
CRASHING = """
import sys, threading
from lvstop.tui.widgets.director_view import DirectorView
DirectorView.action_pause = lambda self: 1 / 0
if sys.argv[1] == "stuck":
    lock = threading.Lock()
    lock.acquire()
    threading.Thread(target=lock.acquire, name="stuck").start()
from lvstop.cli import main
sys.exit(main(["--demo"]))
"""


def _crash(mode: str) -> tuple[subprocess.Popen[bytes], int]:
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING, mode],
        stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    shown = read_until(master, b"demo-director", 30)
    assert b"demo-director" in shown, shown[-500:]
    os.write(master, b" ")
    assert b"ZeroDivisionError" in read_until(master, b"ZeroDivisionError", 10)
    return proc, master


def test_a_crash_exits_non_zero() -> None:
    proc, master = _crash("plain")
    try:
        status = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert status == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_ends_it_after_a_crash_with_a_stuck_thread(sig: signal.Signals) -> None:
    proc, master = _crash("stuck")
    try:
        time.sleep(1)  # the app is gone; the interpreter waits for the stuck thread
        assert proc.poll() is None
        proc.send_signal(sig)
        status = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert status == 128 + sig


# A signal that lands while the main thread holds threading's own lock (as Thread.start does for a moment,
# and the app starts threads at any time) must still end the process.
SIGNAL_IN_THREAD_START = """
import asyncio, os, signal, sys, threading, time
from lvstop.tui.app import end_on_signals

class Running:  # what end_on_signals reads of a running app
    is_running = True
    event_loop = asyncio.new_event_loop()
    def exit(self, status):
        pass  # an exit through Textual that never finishes

threading.Thread(target=Running.event_loop.run_forever, daemon=True).start()
end_on_signals(Running())
with threading._active_limbo_lock:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
"""

# So must one that comes while the terminal is not read (ctrl+s, a stalled pty): its writes would block.
SIGNAL_WITH_A_FULL_TERMINAL = """
import os, signal, threading, time
from lvstop.tui.app import end_on_signals

class Gone:
    is_running = False
    event_loop = None

def fill():
    while True:
        os.write(2, b"x" * 4096)

end_on_signals(Gone())
threading.Thread(target=fill, daemon=True).start()
time.sleep(1)
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(30)
"""


@pytest.mark.parametrize(
    "script", [SIGNAL_IN_THREAD_START, SIGNAL_WITH_A_FULL_TERMINAL], ids=["thread-start", "full-tty"]
)
def test_a_signal_ends_the_process_from_any_state(script: str) -> None:
    master, slave = pty.openpty()  # never read
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script], stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, timeout=25
        )
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 128 + signal.SIGTERM
