"""The checks' own process: the Scheduler and its asyncio loop, away from the poller's and the UI's GIL.

The parent (runner.HealthRunner) starts `python -c ... main(...)` with one end of a socketpair. Frames
both ways are a 4-byte length and a pickle: down, the pairs to probe as they change (Scheduler.apply's
arguments); up, first "ready" (or why not: a namespace that cannot be entered), then results in
batches of plain tuples at most every FLUSH seconds, so the parent's thread wakes about 10 times a
second, not once per probe. The child ends when its socket closes: the parent stopped, or died
(SIGKILL included), so no child outlives it.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from lvstop.errors import LvstopError, SourceError
from lvstop.model import IssueKind

FLUSH = 0.1  # seconds the child gathers results before it sends them
START_TIMEOUT = 30.0  # seconds a child may take to say ready (python and numpy start, on a loaded host)
WireResult = tuple[int, int, bool, float, str, int | None, int | None]  # slot, generation, a ProbeResult


def frame(message: object) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(body).to_bytes(4, "big") + body


class Frames:
    """Whole messages out of a byte stream (the parent's side: it reads what has come)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buf = self._buf
        buf += data
        messages, at = [], 0
        while len(buf) - at >= 4:
            n = int.from_bytes(buf[at : at + 4], "big")
            if len(buf) - at - 4 < n:
                break
            messages.append(pickle.loads(memoryview(buf)[at + 4 : at + 4 + n]))
            at += 4 + n
        del buf[:at]
        return messages


class Child:
    """One checks' process as the parent sees it: started, said ready, then a socket to talk over."""

    def __init__(self, netns: str | None, concurrency: int) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        code = f"import sys; sys.path.insert(0, {root!r}); from lvstop.health.worker import main; main()"
        argv = [sys.executable, "-c", code, str(child.fileno()), str(concurrency), netns or ""]
        try:
            self.proc = subprocess.Popen(
                argv,
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # a TUI's screen: the child says what it has to over the socket
                stderr=subprocess.DEVNULL,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.sock = parent
        self.frames = Frames()
        self.started = time.monotonic()
        try:
            self._handshake()
        except BaseException:
            self.close()
            raise

    def _handshake(self) -> None:
        self.sock.settimeout(START_TIMEOUT)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    raise LvstopError(f"the health checks' process ended as it started ({self.status()})")
                for message in self.frames.feed(data):
                    if message[0] == "ready":
                        return
                    _, kind, text = message
                    raise SourceError(IssueKind(kind), text) if kind else LvstopError(text)
        except TimeoutError:
            raise LvstopError(f"the health checks' process did not start in {START_TIMEOUT:g} s") from None
        finally:
            self.sock.settimeout(None)

    def send(self, message: object) -> None:
        self.sock.sendall(frame(message))

    def status(self) -> str:
        """How the process ended, in words (it is waited for, up to a second)."""
        try:
            rc = self.proc.wait(1.0)
        except subprocess.TimeoutExpired:
            return "still running"
        if rc < 0:
            return f"killed by {signal.Signals(-rc).name}"
        return f"exit status {rc}"

    def close(self, timeout: float = 5.0) -> None:
        """Closes its socket, which ends it; killed if it has not ended within `timeout`."""
        self.sock.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- the child ---------------------------------------------------------------------------------


def main() -> None:
    fd, concurrency, netns = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] or None
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    sock = socket.socket(fileno=fd)
    try:
        if netns is not None:
            from lvstop.sources.netns import enter_netns

            enter_netns(netns)  # the whole process: every socket and command of the checks is there
    except SourceError as e:
        sock.sendall(frame(("error", e.kind.value, str(e))))
        sys.exit(1)
    except Exception as e:  # any reason not to start goes to the parent, in words
        sock.sendall(frame(("error", None, f"{type(e).__name__}: {e}")))
        sys.exit(1)
    sock.sendall(frame(("ready",)))
    asyncio.run(_serve(sock, concurrency))


async def _serve(sock: socket.socket, concurrency: int) -> None:
    from lvstop.health.runner import Result, Scheduler

    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(sock=sock)
    outbox: list[WireResult] = []

    def deliver(batch: list[Result]) -> None:
        if not outbox:
            loop.call_later(FLUSH, flush)
        outbox.extend((s, g, r.ok, r.latency, r.reason, r.weight, r.percent) for s, g, r in batch)

    def flush() -> None:
        writer.write(frame(("results", outbox.copy())))
        outbox.clear()

    scheduler = Scheduler(deliver, concurrency=concurrency)
    try:
        while True:
            head = await reader.readexactly(4)
            scheduler.apply(*pickle.loads(await reader.readexactly(int.from_bytes(head, "big"))))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the parent closed its end, or is gone: so are we
    finally:
        scheduler.stop()
        for task in asyncio.all_tasks(loop) - {asyncio.current_task()}:
            task.cancel()
