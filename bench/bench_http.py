"""Scrape latency beside slow clients, two exporter servers side by side (issue 12 item 5).

    .venv/bin/python bench/bench_http.py --before REV            # 3 phases x 30 s on each side
    .venv/bin/python bench/bench_http.py --before REV --quick    # 10 s phases

Two exporters run at once on loopback, each a child process on the same synthetic director (100 x 10
dests: a 2.3 MB page, 0.1 MB gzipped): "before" imports lvstop from `git archive REV`, "after" from this
tree. Each phase runs on one side, then the other, so both see the same machine load. A prober opens a
new connection for each request, as Prometheus does after an idle 15 s: /metrics (gzip) and /-/healthy
alternately, every 0.25 s. Phases:
  burst     no other clients, 400 requests back to back (the two sides interleaved request by request)
  idle      no other clients, the prober's pace
  slowloris 300 clients sending one byte of a request head a second; one the server cuts reconnects
  readers   150 of those, and 150 clients that asked for /metrics (not gzipped) and read nothing
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
PERIOD = 0.25
SLOW = 300
HEAD = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200


# --- the child: an exporter from a given tree ---------------------------------------------------------------


def serve(root: str, services: int, dests: int) -> None:
    sys.path.insert(0, root)
    from lvstop.exporter.main import build_parser, start, tune_runtime
    from lvstop.sources.sim import SimSource

    tune_runtime()  # as lvstop-exporter's main() does
    state = Path(tempfile.mkdtemp(prefix="bench-http-"))
    args = build_parser().parse_args(
        ["--source", "demo", "--web.listen-address", "127.0.0.1:0", "--drain-state", str(state / "d.json"),
         "--audit-log", str(state / "audit.jsonl"), "--proc-root", "/proc", "--no-collector.conntable"]
    )  # fmt: skip
    running = start(args, SimSource(seed=1, services=services, dests_per_service=dests))
    while running.poller.latest is None:
        time.sleep(0.05)
    print(json.dumps({"url": running.servers[0].url}), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    running.stop()


class Child:
    def __init__(self, root: Path, services: int, dests: int) -> None:
        cmd = [sys.executable, str(HERE), "--serve", str(root), str(services), str(dests)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the exporter did not start: {cmd}")
        host, port = json.loads(line)["url"].split("://")[1].rsplit(":", 1)
        self.addr = (host, int(port))

    def status(self, key: str) -> str:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return line.split(":", 1)[1].strip()
        return "?"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


# --- load ---------------------------------------------------------------------------------------------------


class SlowClients:
    """`heads` clients dripping a request head, one byte a second each (reconnecting when cut), and
    `readers` clients that asked for the plain page and never read. Loopback only; bounded by `stop`."""

    def __init__(self, addr: tuple[str, int], heads: int, readers: int) -> None:
        self.addr = addr
        self.stop = threading.Event()
        self.reconnects = 0
        self.heads = [self._head() for _ in range(heads)]
        self.readers = [self._reader() for _ in range(readers)]
        self._thread = threading.Thread(target=self._drip, daemon=True)
        self._thread.start()

    def _head(self) -> tuple[socket.socket | None, int]:
        try:
            return socket.create_connection(self.addr, timeout=2), 0
        except OSError:
            return None, 0

    def _reader(self) -> socket.socket | None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        s.settimeout(2)
        try:
            s.connect(self.addr)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        except OSError:
            s.close()
            return None
        return s

    def _drip(self) -> None:
        while not self.stop.wait(1.0):
            for i, (s, sent) in enumerate(self.heads):
                try:
                    if s is None:
                        raise OSError
                    s.send(HEAD[sent % len(HEAD) : sent % len(HEAD) + 1])
                    self.heads[i] = (s, sent + 1)
                except OSError:  # cut by the server (a deadline, an eviction): come back, as slowloris does
                    if s is not None:
                        s.close()
                    self.reconnects += 1
                    self.heads[i] = self._head()

    def close(self) -> None:
        self.stop.set()
        self._thread.join()
        for s in [s for s, _ in self.heads] + self.readers:
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()


def request(addr: tuple[str, int], path: str) -> float | None:
    """Seconds for one GET on a new connection (gzip asked), or None when it failed or was not a 200."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(*addr, timeout=10)
    try:
        conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
        resp = conn.getresponse()
        resp.read()
        return time.perf_counter() - t0 if resp.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def probe(addr: tuple[str, int], seconds: float) -> dict[str, list[float | None]]:
    out: dict[str, list[float | None]] = {"/metrics": [], "/-/healthy": []}
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        started = time.monotonic()
        path = "/metrics" if i % 2 == 0 else "/-/healthy"
        out[path].append(request(addr, path))
        i += 1
        time.sleep(max(0.0, started + PERIOD - time.monotonic()))
    return out


# --- report -------------------------------------------------------------------------------------------------


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))]


def summary(xs: list[float | None]) -> tuple[str, float | None, float | None]:
    ok = [x for x in xs if x is not None]
    failed = len(xs) - len(ok)
    if not ok:
        return f"0 of {len(xs)} answered", None, None
    p50, p99 = pct(ok, 50), pct(ok, 99)
    return (
        f"{len(ok)} of {len(xs)} answered, p50 {p50 * 1000:.1f} ms p99 {p99 * 1000:.1f} ms"
        + (f" ({failed} failed)" if failed else ""),
        p50,
        p99,
    )


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b is not None else "n/a (one side answered nothing)"


def phase(child: Child, name: str, seconds: float) -> dict[str, Any]:
    load: SlowClients | None = None
    if name == "slowloris":
        load = SlowClients(child.addr, SLOW, 0)
    elif name == "readers":
        load = SlowClients(child.addr, SLOW // 2, SLOW // 2)
    try:
        if load is not None:
            time.sleep(2.0)  # the slow clients in place
        threads = child.status("Threads")
        got = probe(child.addr, seconds)
        rss = child.status("VmRSS")
    finally:
        if load is not None:
            load.close()
    return {"probes": got, "threads": threads, "rss": rss, "reconnects": load.reconnects if load else 0}


def archive(rev: str, into: Path) -> str:
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", rev], check=True, capture_output=True, text=True
    ).stdout.strip()
    data = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "lvstop"], check=True, capture_output=True
    )
    with tarfile.open(fileobj=io.BytesIO(data.stdout)) as tar:
        tar.extractall(into, filter="data")
    return commit


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--before", help="the git revision whose server is 'before'")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if a.serve:
        serve(a.serve[0], int(a.serve[1]), int(a.serve[2]))
        return
    if not a.before:
        p.error("--before REV is required")
    seconds = 10.0 if a.quick else 30.0
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "lvstop"], capture_output=True, text=True
    )
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    cpu = next((x.split(":", 1)[1].strip() for x in Path("/proc/cpuinfo").read_text().splitlines()
                if x.startswith("model name")), "?")  # fmt: skip
    print(f"machine: nproc={os.cpu_count()}, {cpu}, Python {platform.python_version()}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at start (the machine is shared)")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        before_rev = archive(a.before, Path(tmp))
        print(f"before: lvstop from {before_rev}; after: this tree at {head}"
              f"{' + uncommitted changes' if dirty.stdout.strip() else ''}")  # fmt: skip
        print(
            f"director: 100 x 10 dests (demo); {seconds:.0f} s per phase and side; a probe every {PERIOD} s"
        )
        sides = {"before": Child(Path(tmp), 100, 10), "after": Child(ROOT, 100, 10)}
        results: dict[str, dict[str, dict[str, Any]]] = {"before": {}, "after": {}}
        try:
            burst: dict[str, dict[str, list[float | None]]] = {
                k: {"/metrics": [], "/-/healthy": []} for k in sides
            }
            for i in range(400):
                for side, child in sides.items():
                    path = "/metrics" if i % 2 else "/-/healthy"
                    burst[side][path].append(request(child.addr, path))
            for name in ("idle", "slowloris", "readers"):
                for side, child in sides.items():
                    results[side][name] = phase(child, name, seconds)
        finally:
            for child in sides.values():
                child.stop()
    print("\nburst:")
    for side in ("before", "after"):
        for path in ("/metrics", "/-/healthy"):
            print(f"  {side:6}  {path} {summary(burst[side][path])[0]}")
    for path in ("/metrics", "/-/healthy"):
        old, new = summary(burst["before"][path]), summary(burst["after"][path])
        print(f"  {path} after/before: p50 {ratio(new[1], old[1])}, p99 {ratio(new[2], old[2])}")
    for name in ("idle", "slowloris", "readers"):
        print(f"\n{name}:")
        p50s: dict[str, float | None] = {}
        for side in ("before", "after"):
            r = results[side][name]
            m, p50, _ = summary(r["probes"]["/metrics"])
            h, _, _ = summary(r["probes"]["/-/healthy"])
            p50s[side] = p50
            extra = f"; slow clients reconnected {r['reconnects']} times" if r["reconnects"] else ""
            print(f"  {side:6}  /metrics {m}")
            print(f"          /-/healthy {h}")
            print(f"          exporter threads {r['threads']}, RSS {r['rss']}{extra}")
        print(f"  p50 of /metrics, after/before: {ratio(p50s['after'], p50s['before'])}")
    for side in ("before", "after"):
        idle = summary(results[side]["idle"]["probes"]["/metrics"])
        for name in ("slowloris", "readers"):
            loaded = summary(results[side][name]["probes"]["/metrics"])
            print(
                f"{side}: /metrics with {name} / idle: p50 {ratio(loaded[1], idle[1])}, "
                f"p99 {ratio(loaded[2], idle[2])}"
            )
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
