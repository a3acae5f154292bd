"""Health checks at scale: 5,000 dests, a tcp check every 2 s each, against listeners on loopback.

Usage: .venv/bin/python bench/bench_health.py [--dests N] [--seconds S] [--rounds R] [--fin]
Target: <= 5 % of one core for the checks (2,500 connects a second), and the poller's tick not delayed.

The listeners live in a child process (5,000 sockets on 127.0.0.1, accepting and closing with epoll),
so their CPU is not counted; every probe goes to 127.0.0.1. Three probers run one after the other,
R times alternated, each for S seconds after a warm-up of 2.5 s:

- lvstop: HealthRunner with the real tcp probes, hysteresis and view, exactly as the TUI and the
  exporter run it: the probes in a process of its own, the Book in a thread of this one. Its CPU is
  both processes' (the checks' process's from /proc/PID/stat), and the checks' process's apart.
- peer: the least a Python checker can do for the same probes: one thread, one epoll, non-blocking
  connect to every dest every 2 s, no asyncio, no state. Its CPU is the floor for Python.
- C floor (when a C compiler is there, for information): the peer's loop in C (health_floor.c).
  Its CPU is almost all the kernel's: on loopback the prober's context also runs the listener's half
  of each handshake.

All three close each probe's socket with an RST (SO_LINGER 0, as HAProxy's checks do). With --fin the
peer and the C floor also run with a plain close (FIN) in every round, side by side, and each line
says how many sockets were in TIME_WAIT on loopback at the end of its window (/proc/net/tcp).

CPU is the process's user+system time over the window (getrusage; the C floor's own), divided by the
wall time: the share of one core. Each line says the
share of the due probes done and how many dests ended up (lvstop) or how many probes failed (peer).
Then the poller (SimSource 500 x 10, every 2 s, handing each snapshot to the checks as the exporter
does) runs in the main thread alone, beside lvstop's checks, beside the same checks run in a thread
of this process (as before they had a process of their own: they share the GIL) and beside the C
floor (a prober that shares no GIL with it), R times alternated: how late its ticks start, how long
its polls take, how long update() takes. Last, what a UI tick pays for health beside the checks:
view() and the 50 rows a screen shows, and view() and the state of all 5,000 dests.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lvstop.health.checks import Done, Probes, Target
from lvstop.health.config import CheckSpec, parse
from lvstop.health.runner import HealthRunner, HealthView
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


def usage(pid: int | None) -> tuple[float, float]:
    """User and system seconds of this process, or of process `pid` (/proc/PID/stat)."""
    if pid is None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime, r.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    hz = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / hz, int(fields[12]) / hz


def measure(seconds: float, count: Callable[[], int], pid: int | None = None) -> tuple[Window, Window]:
    """The window's CPU: this process's and the checks' process's (`pid`) together, and the latter's."""
    (u0, s0), (cu0, cs0), t0, p0 = usage(None), usage(pid) if pid else (0, 0), time.monotonic(), count()
    time.sleep(seconds)
    (u1, s1), (cu1, cs1), t1, p1 = usage(None), usage(pid) if pid else (0, 0), time.monotonic(), count()
    child = Window(cu1 - cu0, cs1 - cs0, t1 - t0, p1 - p0)
    return Window(u1 - u0 + child.user, s1 - s0 + child.system, t1 - t0, p1 - p0), child


class InThread:
    """lvstop's real tcp probes run in the runner's own thread (as before its checks' process): the
    runner runs a given starter in-process; this one makes its Probes in the loop on first use."""

    def __init__(self) -> None:
        self._probes: Probes | None = None

    def __call__(self, spec: CheckSpec, target: Target, done: Done) -> None:
        if self._probes is None:
            self._probes = Probes()
        self._probes.start(spec, target, done)


def snapshot(ports: list[int]) -> Snapshot:
    per = 10
    services = []
    for i in range(0, len(ports), per):
        key = ServiceKey.tcp(f"203.0.113.{i // per % 250 + 1}", 1000 + i // per)
        dests = tuple(Dest(AF_INET, "127.0.0.1", p, FwdMethod.ROUTE, 1) for p in ports[i : i + per])
        services.append(Service(key, "wlc", dests=dests))
    return Snapshot("bench", "bench", time.time(), time.monotonic(), services=tuple(services))


CONFIG = "checks:\n  - {service: '*', type: tcp, interval: 2s, timeout: 1s, jitter: 200ms}\n"


def run_lvstop(snap: Snapshot, seconds: float) -> tuple[Window, Window, int]:
    """lvstop's checks over the window (both processes, and the checks' process alone) and how many
    dests were up at its end."""
    runner = HealthRunner(parse(CONFIG))
    runner.start()
    runner.update(snap)
    assert runner._child is not None
    time.sleep(2.5)  # the first round is spread over one interval
    window, child = measure(seconds, lambda: runner.results, runner._child.proc.pid)
    view = runner.view()
    runner.stop()
    return window, child, sum(1 for h in view.values() if h.state is State.UP)


def run_peer(ports: list[int], seconds: float, rst: bool = True) -> tuple[Window, int]:
    """The floor: epoll, non-blocking connects every 2 s, RST close (or FIN); how many connects failed."""
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
            if rst:
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
    window, _ = measure(seconds, lambda: done[0])
    stop.set()
    th.join()
    return window, done[1]


def time_wait() -> int:
    """Sockets in TIME_WAIT (state 06) on this host, IPv4 and IPv6."""
    count = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(path) as f:
            next(f)
            count += sum(1 for line in f if line.split(None, 4)[3] == "06")
    return count


def tw_line() -> str:
    return f"{time_wait()} in TIME_WAIT"


def c_floor(workdir: str) -> Path | None:
    """health_floor.c compiled into `workdir` (None without a C compiler)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    exe = Path(workdir, "health_floor")
    if not exe.exists():
        subprocess.run(
            [cc, "-O2", "-o", str(exe), str(Path(__file__).with_name("health_floor.c"))], check=True
        )
    return exe


def run_c_floor(ports: list[int], seconds: float, workdir: str, rst: bool = True) -> Window | None:
    """The peer's loop in C: what the kernel alone costs per probe."""
    exe = c_floor(workdir)
    if exe is None:
        return None
    out = subprocess.run(
        [str(exe), str(seconds), "rst" if rst else "fin", *map(str, ports)],
        capture_output=True,
        text=True,
        check=True,
    )
    user, system, probes = out.stdout.split()
    return Window(float(user), float(system), seconds, int(probes))


def poller_ticks(
    seconds: float, health: HealthRunner | None, snap: Snapshot
) -> tuple[list[float], list[float], list[float]]:
    """Lateness of each tick's start, each poll's wall time and each update()'s, polling SimSource
    500 x 10 every 2 s and handing `snap` (the checks' dests) to `health` after each poll."""
    from lvstop.poller import Poller
    from lvstop.sources.sim import SimSource

    poller = Poller(SimSource(services=500, dests_per_service=10), interval=2.0)
    late: list[float] = []
    took: list[float] = []
    handed: list[float] = []
    due = time.monotonic()
    end = due + seconds
    while due < end:
        now = time.monotonic()
        late.append(max(0.0, now - due))
        poller.poll_once()
        took.append(time.monotonic() - now)
        if health is not None:
            t = time.perf_counter()
            health.update(snap)
            handed.append(time.perf_counter() - t)
        due += 2.0
        time.sleep(max(0.0, due - time.monotonic()))
    return late, took, handed


def ui_ticks(health: HealthRunner, snap: Snapshot, ticks: int) -> tuple[list[float], list[float]]:
    """A UI tick's health work beside the checks, every 0.1 s: view() and a screen of 50 rows; view()
    and the state of every dest (what per-service counts need)."""
    keys = [(s.key, d.key) for s in snap.services for d in s.dests]
    screen: list[float] = []
    every: list[float] = []
    for i in range(ticks):
        t = time.perf_counter()
        view = health.view()
        rows = [view[k] for k in keys[i % 100 : i % 100 + 50]]
        screen.append(time.perf_counter() - t)
        time.sleep(0.05)
        t = time.perf_counter()
        view = health.view()
        assert isinstance(view, HealthView)
        states = list(view.states())
        every.append(time.perf_counter() - t)
        assert len(rows) == 50 and len(states) == len(keys)
        time.sleep(0.05)
    return screen, every


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dests", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fin", action="store_true", help="also the peer and the C floor closing with a FIN")
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
        children: list[Window] = []
        peers: list[Window] = []
        floors: list[Window] = []
        due = len(ports) / 2.0
        workdir = tempfile.mkdtemp(prefix="bench_health")
        fins: dict[str, list[Window]] = {"peer": [], "C floor": []}
        for r in range(args.rounds):
            window, own, up = run_lvstop(snap, args.seconds)
            ours.append(window)
            children.append(own)
            print(f"  round {r + 1} {window.line('lvstop ', due)}, {up}/{len(ports)} up; {tw_line()}")
            print(f"          of which the checks' process: {own.line('', due)[2:]}")
            window, failed = run_peer(ports, args.seconds)
            peers.append(window)
            print(f"  round {r + 1} {window.line('peer   ', due)}, {failed} failed; {tw_line()}")
            floor = run_c_floor(ports, args.seconds, workdir)
            if floor is not None:
                floors.append(floor)
                print(f"  round {r + 1} {floor.line('C floor', due)}; {tw_line()}")
            if not args.fin:
                continue
            window, failed = run_peer(ports, args.seconds, rst=False)
            fins["peer"].append(window)
            print(f"  round {r + 1} {window.line('peer FIN', due)}, {failed} failed; {tw_line()}")
            floor = run_c_floor(ports, args.seconds, workdir, rst=False)
            if floor is not None:
                fins["C floor"].append(floor)
                print(f"  round {r + 1} {floor.line('C FIN  ', due)}; {tw_line()}")
        for name, rsts in (("peer", peers), ("C floor", floors)):
            if fins[name]:
                fin = statistics.median(w.per_probe_us() for w in fins[name])
                rst = statistics.median(w.per_probe_us() for w in rsts)
                print(
                    f"median CPU per probe, {name:7s}: RST close {rst:.1f} us, FIN close {fin:.1f} us: "
                    f"RST/FIN {rst / fin:.2f}"
                )

        med = statistics.median(w.share for w in ours)
        pmed = statistics.median(w.share for w in peers)
        per = statistics.median(w.per_probe_us() for w in ours)
        pper = statistics.median(w.per_probe_us() for w in peers)
        print(
            f"median share of a core: lvstop {med * 100:.2f} %, peer {pmed * 100:.2f} %: "
            f"ratio {med / pmed:.2f}"
        )
        print(f"median CPU per probe  : lvstop {per:.1f} us, peer {pper:.1f} us: ratio {per / pper:.2f}")
        cuser = statistics.median(w.user / max(1, w.probes) * 1e6 for w in children)
        puser = statistics.median(
            (w.user - c.user) / max(1, w.probes) * 1e6 for w, c in zip(ours, children, strict=True)
        )
        peer_user = statistics.median(w.user / max(1, w.probes) * 1e6 for w in peers)
        print(
            f"median user CPU per probe: the checks' process {cuser:.1f} us, lvstop's own process "
            f"{puser:.1f} us (the Book), the peer {peer_user:.1f} us"
        )
        if floors:
            fper = statistics.median(w.per_probe_us() for w in floors)
            fsys = statistics.median(w.system / w.wall for w in floors)
            print(
                f"median CPU per probe  : C floor {fper:.1f} us, {fper * due / 1e6 * 100:.2f} % of a core at "
                f"the full rate (system time {fsys * 100:.1f} % of a core)"
            )
        projected = per * due / 1e6
        print(f"lvstop at the full rate ({due:.0f} probes/s): {projected * 100:.2f} % of a core")
        print(f"target <= 5 % of a core: {'met' if max(med, projected) <= 0.05 else 'NOT met'}")
        # the poller alone, beside lvstop's checks, beside the C floor (another process: no GIL shared)
        polls: dict[str, tuple[list[float], list[float]]] = {
            "alone": ([], []),
            "lvstop": ([], []),
            "lvstop thread": ([], []),
        }
        exe = c_floor(workdir)
        if exe is not None:
            polls["C floor"] = ([], [])
        handed: list[float] = []
        for _ in range(args.rounds):
            for name, (late, took) in polls.items():
                runner = None
                if name == "lvstop":
                    runner = HealthRunner(parse(CONFIG))
                elif name == "lvstop thread":
                    runner = HealthRunner(parse(CONFIG), start=InThread())
                other = None
                if runner is not None:
                    runner.start()
                    runner.update(snap)
                if name == "C floor":
                    other = subprocess.Popen(
                        [str(exe), str(args.seconds + 5), "rst", *map(str, ports)], stdout=subprocess.DEVNULL
                    )
                time.sleep(2.5)
                a, b, c = poller_ticks(args.seconds, runner, snap)
                late += a
                took += b
                handed += c
                if runner is not None:
                    runner.stop()
                if other is not None:
                    other.kill()
                    other.wait()
        shutil.rmtree(workdir)
        for name, (late, took) in polls.items():
            label = name if name == "alone" else f"beside {name}"
            print(
                f"poller 500x10 {label:20s}: tick late max {max(late) * 1e3:6.1f} ms, poll wall "
                f"p50 {statistics.median(took) * 1e3:6.1f} max {max(took) * 1e3:6.1f} ms ({len(took)} polls)"
            )
        print(f"poller's health.update(snapshot): max {max(handed) * 1e6:.0f} us ({len(handed)} calls)")
        runner = HealthRunner(parse(CONFIG))
        runner.start()
        runner.update(snap)
        time.sleep(2.5)
        screen, every = ui_ticks(runner, snap, int(args.seconds * 10))
        runner.stop()
        for name, took in (
            ("view + 50 rows     ", screen),
            (f"view + {len(snap.table.dests)} states", every),
        ):
            print(
                f"UI tick beside the checks, {name}: p50 {statistics.median(took) * 1e3:6.2f} "
                f"max {max(took) * 1e3:6.2f} ms ({len(took)} ticks; budget 16 ms)"
            )
        print(f"load average at end  : {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        child.kill()
        child.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
