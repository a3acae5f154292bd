"""One poll of a big synthetic director: SimSource(services=500, dests_per_service=10) read, then the
poller's work (estimator for 5,500 entries, rebuilt snapshot, diff into the event log).

Usage: .venv/bin/python bench/bench_poll.py [--polls N] [--services S] [--dests D]
Target: <= 20 ms CPU per poll (p50). The sim's clock advances 2 s per poll, so every poll sees one kernel
tick: every entry's EWMA steps and every dest that got traffic in that tick has new counters. The
machine is shared: CPU time of the polling thread is what counts (wall time is inflated by other jobs);
process CPU over all polls is printed too, so that no work can hide in another thread.

The breakdown repeats the same polls on a twin sim and poller, stage by stage: the sim's traffic
(its stand-in for the kernel counting packets), the sim's snapshot, the poller's estimator and
rebuilt objects, the event diff, freeing the previous snapshot, and freezing the new one (lvstop.gcpolicy,
managed here as the TUI and the exporter manage it).

A last run times the poller's estimator+rebuild stage on snapshots that carry the kernel's rates, as
netlink reads give them on a real director (the estimator then computes only instant rates). And
--netlink N polls go the whole netlink path: NetlinkSource against bench/fake_kernel.py, a process that
serves the demo director over generic netlink (one GET_DEST dump per service, as on a real kernel).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lvstop import gcpolicy
from lvstop.events import diff_snapshots
from lvstop.model import Rates, Snapshot
from lvstop.poller import Poller
from lvstop.sources.sim import SimSource

HERE = Path(__file__).resolve().parent
T0 = 1_700_000_000.0  # 22:13 UTC: busy, not peak
PEAK = 1_699_977_600.0  # 16:00 UTC the same day: the busiest hour of the daily curve


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def ms(x: float) -> str:
    return f"{x * 1e3:6.1f}"


def stats(xs: list[float]) -> str:
    xs = sorted(xs)
    p99 = xs[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))]
    return (
        f"p50 {ms(statistics.median(xs))}  p99 {ms(p99)}  mean {ms(statistics.fmean(xs))}  min {ms(xs[0])} ms"
    )


def run(args: argparse.Namespace, t0: float) -> tuple[list[float], list[float], float, Poller]:
    """Polls as the poller thread runs them: (thread cpu, wall, process cpu per poll, poller)."""
    clock = Clock(t0)
    poller = Poller(SimSource(services=args.services, dests_per_service=args.dests, clock=clock))
    for _ in range(3):  # first sample, warm start, one plain step
        poller.poll_once()
        clock.t += 2.0
    cpu: list[float] = []
    wall: list[float] = []
    p0 = time.process_time()
    for _ in range(args.polls):
        w0, c0 = time.perf_counter(), time.thread_time()
        poller.poll_once()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
        clock.t += 2.0
    return cpu, wall, (time.process_time() - p0) / args.polls, poller


STAGES = ("sim traffic", "sim snapshot", "estimator+rebuild", "event diff", "free old", "gc freeze")


def breakdown(args: argparse.Namespace, t0: float) -> tuple[dict[str, list[float]], float]:
    """The same polls, stage by stage (thread CPU), on a twin poller driven by hand; and the share of
    dests whose counters did not move in a tick."""
    clock = Clock(t0)
    source = SimSource(services=args.services, dests_per_service=args.dests, clock=clock)
    poller = Poller(source)
    for _ in range(3):
        poller.poll_once()
        clock.t += 2.0
    out: dict[str, list[float]] = {k: [] for k in STAGES}
    idle = moved = 0
    for _ in range(args.polls):
        prev = poller.latest
        assert prev is not None
        gc.disable()
        c0 = time.thread_time()
        with source._lock:
            source._advance()  # what read() would do first
        c1 = time.thread_time()
        raw = source.read()
        c2 = time.thread_time()
        snap = poller._enrich(raw, 0.0)
        c3 = time.thread_time()
        diff_snapshots(prev, snap)
        c4 = time.thread_time()
        gc.enable()
        for x, y in zip(prev.services, snap.services, strict=True):  # not timed
            for a, b in zip(x.dests, y.dests, strict=True):
                idle += a.counters == b.counters
                moved += a.counters != b.counters
        c5 = time.thread_time()
        poller.latest = snap
        del prev, raw
        c6 = time.thread_time()
        gcpolicy.PACER.after_build()
        c7 = time.thread_time()
        for name, d in zip(STAGES, (c1 - c0, c2 - c1, c3 - c2, c4 - c3, c6 - c5, c7 - c6), strict=True):
            out[name].append(d)
        clock.t += 2.0
    return out, idle / (idle + moved)


def with_kernel_rates(raw: Snapshot, rates: Rates) -> Snapshot:
    """`raw` as netlink would give it: the kernel's rates on every dest, service and the totals."""
    return dataclasses.replace(
        raw,
        total_rates=rates,
        services=tuple(
            dataclasses.replace(
                s, rates=rates, dests=tuple(dataclasses.replace(d, rates=rates) for d in s.dests)
            )
            for s in raw.services
        ),
    )


def netlink_like(args: argparse.Namespace, t0: float) -> list[float]:
    """The poller's estimator+rebuild stage (thread CPU) for snapshots that carry the kernel's rates,
    as on a real director: only instant rates to compute. The snapshots are made before timing."""
    clock = Clock(t0)
    source = SimSource(services=args.services, dests_per_service=args.dests, clock=clock)
    kernel = Rates(3, 40, 35, 4_000, 90_000)
    raws = []
    for _ in range(args.polls + 3):
        raws.append(with_kernel_rates(source.read(), kernel))
        clock.t += 2.0
    poller = Poller(source)
    out: list[float] = []
    for i, raw in enumerate(raws):
        gc.disable()
        c0 = time.thread_time()
        poller._enrich(raw, 0.0)
        c1 = time.thread_time()
        gc.enable()
        if i >= 3:
            out.append(c1 - c0)
    return out


def netlink_path(args: argparse.Namespace) -> tuple[list[float], list[float]]:
    """Whole polls through NetlinkSource against bench/fake_kernel.py (the demo director served over generic
    netlink by another process, in real time): (poll thread CPU, the part spent in the source's read)."""
    from fake_kernel import connect

    from lvstop.sources.netlink import NetlinkSource

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(HERE / "fake_kernel.py"), tmp, "--services", str(args.services)]
        kernel = subprocess.Popen([*cmd, "--dests", str(args.dests)], stdout=subprocess.PIPE, text=True)
        try:
            assert kernel.stdout is not None and kernel.stdout.readline().strip() == "ready"
            source = NetlinkSource(proc_root=os.path.join(tmp, "proc"), socket_factory=connect(tmp))
            poller = Poller(source)
            read = source.read
            spent = [0.0]

            def timed_read() -> Snapshot:
                c = time.thread_time()
                try:
                    return read()
                finally:
                    spent[0] += time.thread_time() - c

            source.read = timed_read  # type: ignore[method-assign]
            cpu: list[float] = []
            reads: list[float] = []
            for i in range(args.netlink + 3):
                spent[0] = 0.0
                c0 = time.thread_time()
                poller.poll_once()
                if i >= 3:  # the kernel's first rates settle
                    cpu.append(time.thread_time() - c0)
                    reads.append(spent[0])
                time.sleep(2.0)  # the stand-in kernel ticks in real time
            source.close()
        finally:
            kernel.terminate()
            kernel.wait()
    return cpu, reads


def s3_one(services: int, dests: int, polls: int, tick: float = 2.0) -> dict[str, float]:
    """Whole polls of a Poller over NetlinkSource against bench/fake_kernel.py, in this process's code:
    the thread CPU of each poll (read and all processing), p50 and min, and per dest."""
    from fake_kernel import connect

    from lvstop.sources.netlink import NetlinkSource

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(HERE / "fake_kernel.py"), tmp, "--services", str(services)]
        cmd += ["--dests", str(dests), "--tick", str(tick)]
        kernel = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            assert kernel.stdout is not None and kernel.stdout.readline().strip() == "ready"
            # the stand-in kernel's first tick at 100k dests takes longer than a real kernel's reply
            source = NetlinkSource(
                proc_root=os.path.join(tmp, "proc"), socket_factory=connect(tmp), timeout=120.0
            )
            poller = Poller(source)
            cpu: list[float] = []
            user: list[float] = []
            for i in range(polls + 3):
                start = time.monotonic()
                c0 = time.thread_time()
                u0 = resource.getrusage(resource.RUSAGE_THREAD).ru_utime
                poller.poll_once()
                if i >= 3:  # first sample, warm start, the kernel's first rates
                    cpu.append(time.thread_time() - c0)
                    user.append(resource.getrusage(resource.RUSAGE_THREAD).ru_utime - u0)
                time.sleep(max(0.0, start + min(tick, 2.0) + 0.05 - time.monotonic()))  # a kernel tick
            source.close()
        finally:
            kernel.terminate()
            kernel.wait()
    n = services * dests
    p50 = statistics.median(cpu)
    user_p50 = statistics.median(user)
    return {
        "dests": n,
        "p50_ms": p50 * 1e3,
        "min_ms": min(cpu) * 1e3,
        "us_per_dest": p50 / n * 1e6,
        "user_p50_ms": user_p50 * 1e3,
        "user_us_per_dest": user_p50 / n * 1e6,
    }


def demo_one(services: int, dests: int, polls: int) -> dict[str, float]:
    """Whole polls of a Poller over the demo director (SimSource) in this process's code, as run()."""
    cpu, _wall, _per_poll, _poller = run(argparse.Namespace(services=services, dests=dests, polls=polls), T0)
    n = services * dests
    p50 = statistics.median(cpu)
    return {"dests": n, "p50_ms": p50 * 1e3, "min_ms": min(cpu) * 1e3, "us_per_dest": p50 / n * 1e6}


def interleaved(args: argparse.Namespace) -> int:
    """--s3 or --demo: one measuring process per size and code (this checkout's lvstop, and --peer's),
    alternating, so that both see the same machine load."""
    import json

    mode, spec = ("s3", args.s3) if args.s3 else ("demo", args.demo)
    sizes = [tuple(int(x) for x in size.split("x")) for size in spec.split(",")]
    code = {"this": None, "peer": args.peer} if args.peer else {"this": None}
    load_start = os.getloadavg()
    rows: list[tuple[str, str, dict[str, float]]] = []
    for services, dests in sizes:
        for _ in range(args.rounds):
            for label, path in code.items():
                env = dict(os.environ)
                if path:
                    env["PYTHONPATH"] = path
                cmd = [sys.executable, __file__, f"--{mode}-one", f"{services}x{dests}"]
                cmd += ["--polls", str(args.polls), "--kernel-tick", str(args.kernel_tick)]
                done = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if done.returncode:
                    print(f"{services}x{dests} {label}: failed: {done.stderr.strip().splitlines()[-1:]}")
                    continue
                rows.append((f"{services}x{dests}", label, json.loads(done.stdout.splitlines()[-1])))
    print(f"command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(f"date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}")
    print(f"machine: nproc={os.cpu_count()} python={platform.python_version()}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in load_start)}")
    print(f"load average at end  : {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    runs = f"{args.polls} polls per run, {args.rounds} interleaved runs per size and code"
    print(f"peer: {args.peer or '-'}; {runs}")
    if mode == "s3":
        print(
            f"netlink path over bench/fake_kernel.py, kernel tick {args.kernel_tick:g} s, polls >= 2 s apart"
        )
        print("thread CPU of a whole poll (read + processing), p50; 'user' is its user-mode part (rusage)")
    else:
        print("demo director (SimSource): thread CPU of a whole poll (sim tick, read, processing), p50")
    print("size        code   dests  cpu p50 ms   min ms  us/dest | user p50 ms  us/dest")
    for size, label, r in rows:
        cpu = f"{r['p50_ms']:11.1f} {r['min_ms']:8.1f} {r['us_per_dest']:8.2f}"
        user = f"{r['user_p50_ms']:11.1f} {r['user_us_per_dest']:8.2f}" if "user_p50_ms" in r else ""
        print(f"{size:11s} {label:5s} {r['dests']:6.0f} {cpu} | {user}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--s3", help="S3: sizes SxD,SxD,... over the netlink path (fake_kernel), then exit")
    ap.add_argument("--s3-one", help=argparse.SUPPRESS)
    ap.add_argument(
        "--kernel-tick", type=float, default=2.0, help="with --s3: the stand-in kernel's tick (1e9: frozen)"
    )
    ap.add_argument("--demo", help="the demo poll at sizes SxD,SxD,..., interleaved with --peer, then exit")
    ap.add_argument("--demo-one", help=argparse.SUPPRESS)
    ap.add_argument("--peer", help="with --s3/--demo: a directory whose lvstop package is the peer")
    ap.add_argument("--rounds", type=int, default=2, help="with --s3/--demo: runs per size and code")
    ap.add_argument("--polls", type=int, default=40)
    ap.add_argument("--services", type=int, default=500)
    ap.add_argument("--dests", type=int, default=10)
    ap.add_argument("--netlink", type=int, default=15, help="polls over the netlink path (0: skip)")
    args = ap.parse_args()
    if args.s3_one or args.demo_one:
        import json

        services, dests = (int(x) for x in (args.s3_one or args.demo_one).split("x"))
        gcpolicy.manage()  # as the TUI and the exporter do (lvstop.gcpolicy)
        if args.s3_one:
            print(json.dumps(s3_one(services, dests, args.polls, args.kernel_tick)))
        else:
            print(json.dumps(demo_one(services, dests, args.polls)))
        return 0
    if args.s3 or args.demo:
        return interleaved(args)

    gcpolicy.manage()  # as the TUI and the exporter do (lvstop.gcpolicy)
    load_start = os.getloadavg()
    cpu, wall, per_poll, poller = run(args, T0)
    snap = poller.latest
    assert snap is not None
    n_services, n_dests = len(snap.services), sum(len(s.dests) for s in snap.services)
    entries = len(poller.estimator)
    del poller, snap  # the next runs start from the same heap
    parts, idle = breakdown(args, T0)
    peak_cpu, _, peak_per_poll, _ = run(args, PEAK)
    _, peak_idle = breakdown(argparse.Namespace(**{**vars(args), "polls": 3}), PEAK)
    kernel_rates = netlink_like(args, T0)
    nl_cpu, nl_reads = netlink_path(args) if args.netlink else ([], [])

    print(f"command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(f"date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}")
    with open("/proc/cpuinfo") as f:
        cpu_model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    print(f"machine: nproc={os.cpu_count()} cpu={cpu_model!r} python={platform.python_version()}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in load_start)}")
    print(f"load average at end  : {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"director: {n_services} services, {n_dests} dests, estimator entries {entries}")
    print(f"polls: {args.polls} per run, each after 2 s of sim time (one kernel tick)")
    print(f"22:13 UTC, {idle:.0%} of dests without new traffic in a tick:")
    print(f"  poll cpu (thread)   : {stats(cpu)}")
    print(f"  poll wall           : {stats(wall)}")
    print(f"  process cpu per poll: {ms(per_poll)} ms (all threads)")
    print("  breakdown (twin run, thread cpu, p50):")
    for name in STAGES:
        print(f"    {name:18s}: {ms(statistics.median(parts[name]))} ms")
    total = sum(statistics.median(v) for v in parts.values())
    print(f"    {'sum of p50s':18s}: {ms(total)} ms")
    print(f"16:00 UTC (daily peak), {peak_idle:.0%} of dests without new traffic in a tick:")
    print(f"  poll cpu (thread)   : {stats(peak_cpu)}")
    print(f"  process cpu per poll: {ms(peak_per_poll)} ms (all threads)")
    print("netlink-like (the kernel's rates on every dest, service and the totals; 22:13):")
    print(f"  estimator+rebuild   : {stats(kernel_rates)}")
    if nl_cpu:
        print(f"netlink path (NetlinkSource against bench/fake_kernel.py, {len(nl_cpu)} polls in real time):")
        print(f"  poll cpu (thread)   : {stats(nl_cpu)}")
        print(f"  of which the read   : {stats(nl_reads)} (one GET_DEST dump per service, decode)")
    target = 0.020
    for label, xs in (("22:13", cpu), ("16:00", peak_cpu)):
        verdict = "met" if statistics.median(xs) <= target else "NOT met"
        print(f"target <= {target * 1e3:.0f} ms per poll (p50 cpu) at {label}: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
