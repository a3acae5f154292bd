"""Health checks at scale: 5,000 dests, a tcp check every 2 s each, against listeners on loopback.

Usage: .venv/bin/python bench/bench_health.py [--dests N] [--seconds S] [--rounds R]
Target: <= 5 % of one core for the checks (2,500 connects a second), and the poller's tick not delayed.

The listeners live in a child process (5,000 sockets on 127.0.0.1, accepting and closing with epoll),
so their CPU is not counted; every probe goes to 127.0.0.1. Two things run in this process, one after
the other, R times alternated, each for S seconds after a warm-up of one interval:

- lvstop: HealthRunner with the real tcp probe (lvstop.health.checks.probe), hysteresis and view,
  exactly as the TUI and the exporter run it, in its own thread.
- peer: the least a Python checker can do for the same probes: one thread, one epoll, non-blocking
  connect to every dest every 2 s, no asyncio, no timeouts, no state. Its CPU is the floor for Python.

CPU is the process's user+system time over the window (getrusage), divided by the wall time: the share
of one core. Both must complete every probe (counted) with every dest up, else the run is refused.
A last phase runs the poller (SimSource 500 x 10, every 2 s) in a thread beside lvstop's checks and
without them, and reports how late its ticks start and how long its polls take.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lvstop.health.config import parse
from lvstop.health.runner import HealthRunner
from lvstop.health.state import State
from lvstop.model import AF_INET, Dest, FwdMethod, Service, ServiceKey, Snapshot

LISTENER = r"""
import os, resource, select, socket, sys
n = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
ep = select.epoll()
socks = {}
for _ in range(n):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    s.setblocking(False)
    socks[s.fileno()] = s
    ep.register(s.fileno(), select.EPOLLIN)
sys.stdout.write(" ".join(str(s.getsockname()[1]) for s in socks.values()) + "\n")
sys.stdout.flush()
parent = os.getppid()
while os.getppid() == parent:  # ends with the benchmark, however that ends
    for fd, _ in ep.poll(1.0):
        try:
            while True:
                c, _ = socks[fd].accept()
                c.close()
        except (BlockingIOError, ConnectionAbortedError):
            pass
"""


@dataclass
class Window:
    """What one side used over the measured window."""

    user: float
    system: float
    wall: float
    probes: int

    @property
    def share(self) -> float:
        return (self.user + self.system) / self.wall

    def per_probe_us(self) -> float:
        return (self.user + self.system) / max(1, self.probes) * 1e6

    def line(self, name: str, due_per_s: float) -> str:
        projected = self.per_probe_us() * due_per_s / 1e6
        return (
            f"{name}: {self.share * 100:5.2f} % of a core (user {self.user / self.wall * 100:4.1f} + "
            f"sys {self.system / self.wall * 100:4.1f}), {self.probes / self.wall:6.0f} probes/s "
            f"({self.probes / self.wall / due_per_s * 100:3.0f} % of due), "
            f"{self.per_probe_us():5.1f} us/probe "
            f"-> {projected * 100:5.2f} % at the full rate"
        )


def measure(seconds: float, count: Callable[[], int]) -> Window:
    r0, t0, p0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), count()
    time.sleep(seconds)
    r1, t1, p1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), count()
    return Window(r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime, t1 - t0, p1 - p0)


def snapshot(ports: list[int]) -> Snapshot:
    per = 10
    services = []
    for i in range(0, len(ports), per):
        key = ServiceKey.tcp(f"203.0.113.{i // per % 250 + 1}", 1000 + i // per)
        dests = tuple(Dest(AF_INET, "127.0.0.1", p, FwdMethod.ROUTE, 1) for p in ports[i : i + per])
        services.append(Service(key, "wlc", dests=dests))
    return Snapshot("bench", "bench", time.time(), time.monotonic(), services=tuple(services))


CONFIG = "checks:\n  - {service: '*', type: tcp, interval: 2s, timeout: 1s, jitter: 200ms}\n"


def run_lvstop(snap: Snapshot, seconds: float) -> tuple[Window, int]:
    """lvstop's checks over the window, and how many dests were up at its end."""
    runner = HealthRunner(parse(CONFIG))
    runner.start()
    runner.update(snap)
    time.sleep(2.5)  # the first round is spread over one interval
    window = measure(seconds, lambda: runner.results)
    view = runner.view()
    runner.stop()
    return window, sum(1 for h in view.values() if h.state is State.UP)


def run_peer(ports: list[int], seconds: float) -> tuple[Window, int]:
    """The floor: epoll, non-blocking connects every 2 s, RST close; and how many connects failed."""
    ep = select.epoll()
    stop = threading.Event()
    done = [0, 0]

    def main() -> None:
        pending: dict[int, tuple[socket.socket, float]] = {}
        due = [(time.monotonic() + 2.0 * i / len(ports), p) for i, p in enumerate(ports)]
        linger = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")
        i = 0
        swept = time.monotonic()

        def close(fd: int, s: socket.socket) -> None:
            ep.unregister(fd)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            s.close()

        while not stop.is_set():
            now = time.monotonic()
            while due[i][0] <= now:
                t, p = due[i]
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
                s.connect_ex(("127.0.0.1", p))
                pending[s.fileno()] = (s, now + 1.0)
                ep.register(s.fileno(), select.EPOLLOUT)
                due[i] = (t + 2.0, p)
                i = (i + 1) % len(due)
            for fd, _ in ep.poll(0.01):
                s, _ = pending.pop(fd)
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    done[1] += 1
                done[0] += 1
                close(fd, s)
            if now - swept >= 0.05:  # the same 1 s timeout as lvstop's, swept as often
                swept = now
                for fd, (s, _) in [x for x in pending.items() if x[1][1] <= now]:
                    del pending[fd]
                    done[0] += 1
                    done[1] += 1
                    close(fd, s)

    th = threading.Thread(target=main)
    th.start()
    time.sleep(2.5)
    window = measure(seconds, lambda: done[0])
    stop.set()
    th.join()
    return window, done[1]


def poller_ticks(seconds: float, with_health: HealthRunner | None) -> tuple[list[float], list[float]]:
    """Lateness of each tick's start and each poll's wall time, polling SimSource 500 x 10 every 2 s."""
    from lvstop.poller import Poller
    from lvstop.sources.sim import SimSource

    poller = Poller(SimSource(services=500, dests_per_service=10), interval=2.0)
    late: list[float] = []
    took: list[float] = []
    due = time.monotonic()
    end = due + seconds
    while due < end:
        now = time.monotonic()
        late.append(max(0.0, now - due))
        poller.poll_once()
        took.append(time.monotonic() - now)
        due += 2.0
        time.sleep(max(0.0, due - time.monotonic()))
    return late, took


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dests", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    child = subprocess.Popen(
        [sys.executable, "-c", LISTENER, str(args.dests)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        ports = [int(p) for p in child.stdout.readline().split()]
        snap = snapshot(ports)
        load0 = os.getloadavg()
        print(f"command: .venv/bin/python bench/bench_health.py {' '.join(sys.argv[1:])}".rstrip())
        print(f"date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}")
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        cpu_name = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?")
        print(f"machine: nproc={os.cpu_count()} cpu={cpu_name!r} python={platform.python_version()}")
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in load0)}")
        print(f"dests: {len(ports)} tcp checks every 2 s (jitter 0.2 s) against listeners on 127.0.0.1")
        print(f"window: {args.seconds:g} s after a 2.5 s warm-up, {args.rounds} rounds alternated")
        ours: list[Window] = []
        peers: list[Window] = []
        due = len(ports) / 2.0
        for r in range(args.rounds):
            window, up = run_lvstop(snap, args.seconds)
            ours.append(window)
            print(f"  round {r + 1} {window.line('lvstop', due)}, {up}/{len(ports)} up")
            window, failed = run_peer(ports, args.seconds)
            peers.append(window)
            print(f"  round {r + 1} {window.line('peer  ', due)}, {failed} failed")
        med = statistics.median(w.share for w in ours)
        pmed = statistics.median(w.share for w in peers)
        per = statistics.median(w.per_probe_us() for w in ours)
        pper = statistics.median(w.per_probe_us() for w in peers)
        print(
            f"median share of a core: lvstop {med * 100:.2f} %, peer {pmed * 100:.2f} %: "
            f"ratio {med / pmed:.2f}"
        )
        print(f"median CPU per probe  : lvstop {per:.1f} us, peer {pper:.1f} us: ratio {per / pper:.2f}")
        projected = per * due / 1e6
        print(f"lvstop at the full rate ({due:.0f} probes/s): {projected * 100:.2f} % of a core")
        print(f"target <= 5 % of a core: {'met' if max(med, projected) <= 0.05 else 'NOT met'}")
        runner = HealthRunner(parse(CONFIG))
        runner.start()
        runner.update(snap)
        time.sleep(2.5)
        late_h, took_h = poller_ticks(args.seconds, runner)
        runner.stop()
        late_0, took_0 = poller_ticks(args.seconds, None)
        for name, late, took in (("with checks", late_h, took_h), ("alone      ", late_0, took_0)):
            print(
                f"poller 500x10 {name}: tick late max {max(late) * 1e3:6.1f} ms, poll wall "
                f"p50 {statistics.median(took) * 1e3:6.1f} max {max(took) * 1e3:6.1f} ms ({len(took)} polls)"
            )
        print(f"load average at end  : {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        child.kill()
        child.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
