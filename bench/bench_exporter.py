"""Benchmark of lvstop-exporter on the demo's synthetic big directors (issue 5's acceptance numbers).

    .venv/bin/python bench/bench_exporter.py            # everything, about 10 minutes
    .venv/bin/python bench/bench_exporter.py --quick    # shorter runs, for a smoke check

The exporter runs in a child process (this script with --serve) so that its CPU and RSS are its own;
the scrapers run here, as threads with keep-alive connections asking for gzip as Prometheus does.
Scenarios:
  scrape   500 x 10 dests, 20 scrapers each scraping once a second: scrape latency (target p99 <= 50 ms)
  big      2,000 x 50 (100k dests), default flags, 5 scrapers back to back: /-/healthy latency probed every
           50 ms meanwhile (target p99 <= 50 ms) and peak RSS (target <= 150 MB)
  flags    2,000 x 50 with --no-collector.dests, 20 scrapers once a second: scrape p99 (target <= 100 ms)
  cpu      500 x 10, one scrape every 15 s for 5 minutes: exporter CPU (target <= 2 % of a core)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import http.client
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int | str = "self", key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- the child: an exporter on a synthetic director ---------------------------------------------------------


def serve(services: int, dests: int, flags: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    from lvstop.exporter.main import build_parser, start, tune_runtime
    from lvstop.sources.sim import SimSource

    tune_runtime()  # as lvstop-exporter's main() does
    state = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-exporter-{os.getpid()}"
    state.mkdir(parents=True, exist_ok=True)
    args = build_parser().parse_args(
        ["--source", "demo", "--web.listen-address", "127.0.0.1:0", "--drain-state", str(state / "d.json"),
         "--audit-log", str(state / "audit.jsonl"), "--proc-root", "/proc", *flags]
    )  # fmt: skip
    base_rss = rss_mb()
    t0 = time.perf_counter()
    source = SimSource(seed=1, services=services, dests_per_service=dests)
    built = time.perf_counter() - t0
    sim_rss = rss_mb() - base_rss  # the demo's stand-in for the kernel: not the exporter's memory
    collections: list[float] = []  # seconds each, as the collector runs them with the GIL held
    started: list[float] = [0.0]

    def on_gc(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            collections.append(time.perf_counter() - started[0])

    gc.callbacks.append(on_gc)
    running = start(args, source)
    polls = [0, 0.0]
    # CPU seconds by part, from the CPU clock of the thread doing the work.
    cpu = {"poll": 0.0, "render": 0.0, "conntable": 0.0}
    last: dict[str, float] = {}

    def spent(part: str) -> None:
        now = time.thread_time()
        cpu[part] += now - last.get(part, now)
        last[part] = now

    def count(_snap: Any) -> None:
        polls[0] += 1
        polls[1] += running.poller.last_duration or 0.0
        spent("poll")

    cache = running.exporter.metrics_cache
    render = cache._render

    def timed_render() -> Any:
        t = time.thread_time()
        try:
            return render()
        finally:
            cpu["render"] += time.thread_time() - t

    cache._render = timed_render
    running.poller.subscribe(count)
    if running.conn is not None:
        running.conn.subscribe(lambda _s: spent("conntable"))
    while running.poller.latest is None:
        time.sleep(0.05)
    print(
        json.dumps(
            {"url": running.servers[0].url, "sim_build_s": built, "base_rss": base_rss, "sim_rss": sim_rss}
        ),
        flush=True,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    stats = {
        "polls": polls[0],
        "poll_s": polls[1],
        "renders": cache.renders,
        "last_render_s": cache.last_render,
        "gc_n": len(collections),
        "gc_s": sum(collections),
        "gc_max_s": max(collections, default=0.0),
    }
    print(json.dumps({**stats, "cpu": cpu}), flush=True)
    running.stop()


# --- the parent: load and measurements ----------------------------------------------------------------------


class Child:
    def __init__(self, services: int, dests: int, flags: list[str]) -> None:
        cmd = [sys.executable, str(HERE), "--serve", str(services), str(dests), *flags]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the exporter did not start: {cmd}")
        info = json.loads(line)
        self.url: str = info["url"]
        self.host = self.url.split("://")[1]
        self.sim_build_s: float = info["sim_build_s"]
        self.base_rss: float = info["base_rss"]  # MB after imports, before the demo director
        self.sim_rss: float = info["sim_rss"]  # MB the demo director's state took

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime

    def rss_mb(self, key: str = "VmRSS") -> float:
        return rss_mb(self.proc.pid, key)

    def memory(self, peak: float) -> str:
        """Where a peak RSS comes from: start-up, the demo director (not the exporter's), the rest."""
        rest = peak - self.base_rss - self.sim_rss
        return (
            f"  of which: {self.base_rss:.0f} MB interpreter and imports, {self.sim_rss:.0f} MB the demo's "
            f"simulated director (the kernel's stand-in), {rest:.0f} MB the exporter's own (poller, "
            "connection table, pages)"
        )

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.stdout is not None
        out = self.proc.stdout.readline()
        self.proc.wait(timeout=60)
        return json.loads(out) if out else {}


def fetch(conn: http.client.HTTPConnection, path: str, gzip: bool = True) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    conn.request("GET", path, headers={"Accept-Encoding": "gzip"} if gzip else {})
    resp = conn.getresponse()
    body = resp.read()
    return time.perf_counter() - t0, resp.status, len(body)


def scrapers(host: str, n: int, seconds: float, period: float | None) -> list[float]:
    """n scrapers for `seconds`; each scrapes every `period` s (random phase), or back to back when None."""
    times: list[float] = []
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def run() -> None:
        conn = http.client.HTTPConnection(host, timeout=60)
        if period:
            time.sleep(random.uniform(0, period))
        while time.monotonic() < end:
            started = time.monotonic()
            dt, status, _ = fetch(conn, "/metrics")
            assert status == 200, status
            with lock:
                times.append(dt)
            if period:
                time.sleep(max(0.0, started + period - time.monotonic()))
        conn.close()

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))]


def ms(xs: list[float]) -> str:
    return (
        f"n={len(xs)} p50={pct(xs, 50) * 1000:.1f} ms p90={pct(xs, 90) * 1000:.1f} ms "
        f"p99={pct(xs, 99) * 1000:.1f} ms max={max(xs) * 1000:.1f} ms"
    )


def collector(stats: dict[str, Any]) -> str:
    return (
        f"  cyclic GC in the exporter: {stats.get('gc_n')} collections, {stats.get('gc_s', 0):.2f} s, "
        f"longest {stats.get('gc_max_s', 0) * 1000:.0f} ms (GIL held)"
    )


def verdict(value: float, limit: float) -> str:
    return "PASS" if value <= limit else "FAIL"


def page_size(host: str) -> tuple[int, int]:
    conn = http.client.HTTPConnection(host, timeout=60)
    _, _, gz = fetch(conn, "/metrics")
    _, _, plain = fetch(conn, "/metrics", gzip=False)
    conn.close()
    return gz, plain


def scenario_scrape(quick: bool) -> list[str]:
    child = Child(500, 10, [])
    try:
        scrapers(child.host, 20, 5, 1.0)  # warm up: the exporter learns it is scraped every poll
        times = scrapers(child.host, 20, 10 if quick else 30, 1.0)
        gz, plain = page_size(child.host)
    finally:
        stats = child.stop()
    p99 = pct(times, 99) * 1000
    return [
        "scrape: 500 services x 10 dests, 20 scrapers, one gzip scrape per second each",
        f"  page {plain / 1e6:.1f} MB, {gz / 1e6:.2f} MB gzip; "
        f"last render {stats.get('last_render_s', 0) * 1000:.0f} ms",
        f"  scrape latency {ms(times)}",
        f"  target p99 <= 50 ms: {p99:.1f} ms {verdict(p99, 50)}",
    ]


def scenario_big(quick: bool) -> list[str]:
    child = Child(2000, 50, [])
    rss_peak = child.rss_mb()
    healthy: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        conn = http.client.HTTPConnection(child.host, timeout=60)
        while not stop.is_set():
            dt, status, _ = fetch(conn, "/-/healthy")
            assert status == 200
            healthy.append(dt)
            time.sleep(0.05)
        conn.close()

    def rss() -> None:
        nonlocal rss_peak
        while not stop.is_set():
            rss_peak = max(rss_peak, child.rss_mb())
            time.sleep(0.2)

    threads = [threading.Thread(target=probe), threading.Thread(target=rss)]
    for t in threads:
        t.start()
    try:
        times = scrapers(child.host, 5, 20 if quick else 60, None)
        gz, plain = page_size(child.host)
    finally:
        stop.set()
        for t in threads:
            t.join()
        hwm = child.rss_mb("VmHWM")
        stats = child.stop()
    p99 = pct(healthy, 99) * 1000
    return [
        "big: 2,000 services x 50 dests (100k dests), default flags, 5 scrapers back to back",
        f"  demo director built in {child.sim_build_s:.1f} s; {stats.get('polls')} polls, "
        f"{stats.get('poll_s', 0) / max(1, stats.get('polls', 1)):.2f} s each; "
        f"{stats.get('renders')} renders, "
        f"last {stats.get('last_render_s', 0):.2f} s",
        f"  page {plain / 1e6:.0f} MB, {gz / 1e6:.1f} MB gzip",
        f"  scrape latency {ms(times)}",
        f"  /-/healthy during scrapes {ms(healthy)}",
        f"  target /-/healthy p99 <= 50 ms: {p99:.1f} ms {verdict(p99, 50)}",
        collector(stats),
        f"  peak RSS {max(rss_peak, hwm):.0f} MB (VmHWM {hwm:.0f} MB); target <= 150 MB: "
        f"{verdict(max(rss_peak, hwm), 150)}",
        child.memory(max(rss_peak, hwm)),
    ]


def scenario_flags(quick: bool) -> list[str]:
    child = Child(2000, 50, ["--no-collector.dests"])
    try:
        scrapers(child.host, 20, 5, 1.0)
        times = scrapers(child.host, 20, 10 if quick else 30, 1.0)
        gz, plain = page_size(child.host)
        rss = child.rss_mb("VmHWM")
    finally:
        stats = child.stop()
    p99 = pct(times, 99) * 1000
    return [
        "flags: 2,000 x 50 with --no-collector.dests (per-dest series dropped), 20 scrapers once a second",
        f"  page {plain / 1e6:.1f} MB, {gz / 1e6:.2f} MB gzip; "
        f"last render {stats.get('last_render_s', 0) * 1000:.0f} ms",
        f"  scrape latency {ms(times)}",
        f"  target p99 <= 100 ms: {p99:.1f} ms {verdict(p99, 100)}",
        collector(stats),
        f"  peak RSS (VmHWM) {rss:.0f} MB; target <= 150 MB: {verdict(rss, 150)}",
        child.memory(rss),
    ]


def scenario_cpu(quick: bool) -> list[str]:
    seconds = 60 if quick else 300
    child = Child(500, 10, [])
    try:
        time.sleep(4)  # past start-up
        cpu0, t0 = child.cpu_seconds(), time.monotonic()
        times = scrapers(child.host, 1, seconds, 15.0)
        cpu1, t1 = child.cpu_seconds(), time.monotonic()
        rss = child.rss_mb("VmHWM")
    finally:
        stats = child.stop()
    share = (cpu1 - cpu0) / (t1 - t0) * 100
    parts = stats.get("cpu", {})
    total = cpu1
    breakdown = ", ".join(f"{k} {v:.2f} s ({v / total * 100:.0f} %)" for k, v in parts.items())
    rest = total - sum(parts.values())
    return [
        f"cpu: 500 x 10, one scrape every 15 s for {seconds} s",
        f"  exporter CPU {cpu1 - cpu0:.2f} s over {t1 - t0:.0f} s = {share:.2f} % of a core; "
        f"target <= 2 %: {verdict(share, 2)}",
        f"  whole run {total:.2f} s CPU: {breakdown}, the rest (start-up, HTTP, Python) {rest:.2f} s",
        f"  {stats.get('polls')} polls, {stats.get('renders')} renders "
        f"(last {stats.get('last_render_s', 0) * 1000:.0f} ms)",
        f"  scrapes {ms(times)}",
        f"  peak RSS (VmHWM) {rss:.0f} MB",
    ]


def slow_clients(host: str, n: int, seconds: float, stop: threading.Event) -> list[socket.socket]:
    """n connections that each send one byte of a request head a second (never finishing it), for at most
    `seconds`; loopback only. Returns the sockets (closed by the caller)."""
    addr, port = host.rsplit(":", 1)
    socks: list[socket.socket] = []
    for _ in range(n):
        try:
            socks.append(socket.create_connection((addr, int(port)), timeout=2))
        except OSError:
            break
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200

    def drip() -> None:
        end = time.monotonic() + seconds
        for i in range(len(head)):
            if stop.is_set() or time.monotonic() > end:
                return
            for s in socks:
                with contextlib.suppress(OSError):  # closed by the server: what a deadline does
                    s.send(head[i : i + 1])
            stop.wait(1.0)

    threading.Thread(target=drip, daemon=True).start()
    return socks


def probe(host: str, seconds: float, period: float) -> tuple[list[float], int, int]:
    """A new connection per request (as Prometheus after a failure): /metrics and /-/healthy alternately
    every `period` s. Returns (latencies of answered requests, answered, failed)."""
    addr, port = host.rsplit(":", 1)
    times: list[float] = []
    failed = 0
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        t0 = time.perf_counter()
        try:
            conn = http.client.HTTPConnection(addr, int(port), timeout=10)
            _, status, _ = fetch(conn, "/metrics" if i % 2 == 0 else "/-/healthy")
            conn.close()
            if status == 200:
                times.append(time.perf_counter() - t0)
            else:
                failed += 1
        except (OSError, http.client.HTTPException):
            failed += 1
        i += 1
        time.sleep(max(0.0, period - (time.perf_counter() - t0)))
    return times, len(times), failed


def scenario_slow(quick: bool) -> list[str]:
    """Issue 12 item 5: 300 clients each sending one header byte a second beside a scraper."""
    child = Child(50, 10, [])
    seconds = 20.0 if quick else 45.0
    try:
        base, base_ok, base_failed = probe(child.host, 10.0, 0.5)  # the peer: no slow clients
        stop = threading.Event()
        socks = slow_clients(child.host, 300, seconds + 5, stop)
        time.sleep(1.0)
        times, ok, failed = probe(child.host, seconds, 0.5)
        stop.set()
        for s in socks:
            s.close()
    finally:
        child.stop()
    lines = [
        f"slow: 50 x 10, {len(socks)} clients sending one header byte a second; a prober opens a new "
        "connection every 0.5 s for /metrics and /-/healthy alternately",
        f"  without slow clients: {base_ok} answered, {base_failed} failed; latency {ms(base)}",
        f"  with slow clients ({seconds:.0f} s): {ok} answered, {failed} failed"
        + (f"; latency {ms(times)}" if times else ""),
    ]
    if times and base:
        lines.append(f"  p50 ratio with/without slow clients: {pct(times, 50) / pct(base, 50):.1f}x")
    lines.append(f"  target: every probe answered: {'PASS' if failed == 0 else 'FAIL'}")
    return lines


SCENARIOS = {
    "scrape": scenario_scrape,
    "big": scenario_big,
    "flags": scenario_flags,
    "cpu": scenario_cpu,
    "slow": scenario_slow,
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--serve", nargs="+", help=argparse.SUPPRESS)
    p.add_argument("scenarios", nargs="*", help=f"any of {', '.join(SCENARIOS)} (default: all)")
    a, rest = p.parse_known_args()
    if a.serve:
        serve(int(a.serve[0]), int(a.serve[1]), [*a.serve[2:], *rest])
        return
    unknown = set(a.scenarios) - set(SCENARIOS)
    if unknown or rest:
        p.error(f"unknown scenario or flag: {' '.join([*unknown, *rest])}")
    cpu = next((x.split(":", 1)[1].strip() for x in Path("/proc/cpuinfo").read_text().splitlines()
                if x.startswith("model name")), "?")  # fmt: skip
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"machine: nproc={os.cpu_count()}, {cpu}, Python {platform.python_version()}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at start (the machine is shared)")  # fmt: skip
    for name in a.scenarios or SCENARIOS:
        print()
        for line in SCENARIOS[name](a.quick):
            print(line, flush=True)
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
