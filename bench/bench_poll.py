"""One poll of a big synthetic director: SimSource(services=500, dests_per_service=10) read, then the
poller's work (estimator for 5,500 entries, rebuilt snapshot, diff into the event log).

Usage: .venv/bin/python bench/bench_poll.py [--polls N] [--services S] [--dests D]
Target: <= 20 ms per poll. The sim's clock advances 2 s per poll, so every poll sees one kernel tick
(every counter moves, every EWMA steps): the worst case. The machine is shared: CPU time of the
polling thread is reported beside wall time because other jobs inflate the wall clock. The
"floor" line times only the objects a poll must build with the frozen model (per dest: Dest and
Counters in the source, Dest and two Rates in the poller), which no code in a poll can avoid.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

from lvstop.model import AF_INET, Counters, Dest, FwdMethod, Rates, TunType
from lvstop.poller import Poller
from lvstop.sources.sim import SimSource

T0 = 1_700_000_000.0  # 22:13 UTC: busy, not peak


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def stats(xs: list[float]) -> str:
    xs = sorted(xs)
    p99 = xs[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))]
    return (
        f"mean {statistics.fmean(xs) * 1e3:6.1f}  p50 {statistics.median(xs) * 1e3:6.1f}  "
        f"p99 {p99 * 1e3:6.1f}  min {xs[0] * 1e3:6.1f} ms"
    )


def floor(n_dests: int, repeat: int = 5) -> float:
    """Seconds to build the objects of one poll, best of `repeat`."""
    r = Rates(1, 2, 3, 4, 5)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        for i in range(n_dests):
            c = Counters(i, i, i, i, i)
            d = Dest(AF_INET, "192.0.2.1", 8080, FwdMethod.MASQ, 1, 0, 0, 5, 9, 0, TunType.IPIP, 0, 0, c)
            Dest(AF_INET, "192.0.2.1", 8080, FwdMethod.MASQ, 1, 0, 0, 5, 9, 0, TunType.IPIP, 0, 0, c, r, r)
            Rates(d.port, 1.0, 2.0, 3.0, 4.0)
            Rates(d.port, 1.0, 2.0, 3.0, 4.0)
        best = min(best, time.thread_time() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--polls", type=int, default=40)
    ap.add_argument("--services", type=int, default=500)
    ap.add_argument("--dests", type=int, default=10)
    args = ap.parse_args()

    clock = Clock()
    source = SimSource(services=args.services, dests_per_service=args.dests, clock=clock)
    poller = Poller(source)
    for _ in range(3):  # first sample, warm start, one plain step
        poller.poll_once()
        clock.t += 2.0
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(args.polls):
        w0, c0 = time.perf_counter(), time.thread_time()
        poller.poll_once()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
        clock.t += 2.0

    # The same polls split: the source's read alone, on a twin sim at the same clock.
    twin_clock = Clock()
    twin = SimSource(services=args.services, dests_per_service=args.dests, clock=twin_clock)
    read_cpu: list[float] = []
    for _ in range(args.polls + 3):
        twin_clock.t += 2.0
        c0 = time.thread_time()
        twin.read()
        read_cpu.append(time.thread_time() - c0)
    read_cpu = read_cpu[3:]

    snap = poller.latest
    assert snap is not None
    n_dests = sum(len(s.dests) for s in snap.services)
    print(f"command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(f"date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}")
    with open("/proc/cpuinfo") as f:
        cpu_model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    print(f"machine: nproc={os.cpu_count()} cpu={cpu_model!r} python={platform.python_version()}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    entries = len(poller.estimator)
    print(f"director: {len(snap.services)} services, {n_dests} dests, estimator entries {entries}")
    print(f"polls: {args.polls} (each after 2 s of sim time: one kernel tick)")
    print(f"poll wall : {stats(wall)}")
    print(f"poll cpu  : {stats(cpu)}")
    print(f"  source read cpu      : {stats(read_cpu)}")
    poller_cpu = [max(0.0, a - b) for a, b in zip(sorted(cpu), sorted(read_cpu), strict=True)]
    print(f"  poller work cpu (est): {stats(poller_cpu)}")
    print(f"floor (object construction only, best of 5): {floor(n_dests) * 1e3:.1f} ms")
    target = 0.020
    verdict = "met" if statistics.median(cpu) <= target else "NOT met"
    print(f"target <= {target * 1e3:.0f} ms per poll (p50 cpu): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
