"""CPU of one /metrics render of a fresh snapshot (no rows built yet), this tree against a git ref.

    .venv/bin/python bench/bench_render.py --before main          # 500x10 and 2,000x50, 3 rounds each
    .venv/bin/python bench/bench_render.py --before main --rounds 5 2000x50
    .venv/bin/python bench/bench_render.py --before main --health 2000x50   # + a tcp check on every dest

Each measurement runs in a child process (`--child ROOT SIZE`) on the demo's synthetic director, polled
twice so that rates exist; the children of the two trees alternate, so both see the same machine load.
A render is timed on the thread's CPU clock, with the collector paused as the exporter renders.
With --health every dest has a tcp check (answered at once, every third one down, by a stub: no probe
leaves) and the render includes what a scrape asks of the checks (lvstop.exporter.main._backends).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]


def checked(snap: Any) -> Any:
    """A HealthRunner with a tcp check on every dest of `snap`, stopped once each has an answer."""
    from lvstop.health.config import parse
    from lvstop.health.runner import HealthRunner
    from lvstop.health.state import ProbeResult

    answers = (ProbeResult(True, 0.0004, "connected"), ProbeResult(False, 1.0, "timed out after 1 s"))
    down: dict[Any, bool] = {}  # by (service, dest): every third one down, for good

    def start(spec: Any, target: Any, done: Any) -> None:
        key = (target.service, target.dest)
        done(answers[down.setdefault(key, len(down) % 3 == 0)])

    config = parse("checks:\n  - {service: '*', type: tcp, port: 80, interval: 1s, fall: 1}\n")
    runner = HealthRunner(config, start=start)
    runner.start()
    runner.update(snap)
    while len(down) < len(snap.table.dests):
        time.sleep(0.2)
    time.sleep(0.2)  # the last batch reaches the book
    runner.stop()
    return runner


def child(root: str, size: str, reps: int, checks: bool) -> None:
    sys.path.insert(0, root)
    import dataclasses

    from lvstop import gcpolicy
    from lvstop.exporter.main import _backends
    from lvstop.exporter.metrics import Health, Inputs, render_inputs
    from lvstop.model import ServiceRows
    from lvstop.poller import Poller
    from lvstop.sources.sim import SimSource

    services, dests = (int(x) for x in size.split("x"))
    clock = [1_700_000_000.0]
    poller = Poller(SimSource(seed=1, services=services, dests_per_service=dests, clock=lambda: clock[0]))
    poller.poll_once()
    clock[0] += 2.0
    snap = poller.latest = poller.poll_once()
    health = Health("demo", True, 0.0, 0.0)
    runner = checked(snap) if checks else None
    times = []
    size_out = 0
    for _ in range(reps):
        table = snap.services.table if isinstance(snap.services, ServiceRows) else snap.table
        fresh = dataclasses.replace(snap, services=ServiceRows(table))  # no row built yet
        if runner is not None:
            runner._view = (-1, runner._view[1])  # results arrive between scrapes: each sees a new view
        t0 = time.thread_time()
        with gcpolicy.paused():
            backends = _backends(runner) if runner is not None else None
            body = render_inputs(Inputs(fresh, health, backends=backends), keep_limit=0)
        times.append(time.thread_time() - t0)
        size_out = body.size
    print(json.dumps({"times": times, "bytes": size_out, "dests": services * dests}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--before", default="main", help="git ref to compare with (default main)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=3, help="renders per child")
    p.add_argument("--health", action="store_true", help="a tcp check on every dest, its health rendered")
    p.add_argument("sizes", nargs="*", default=["500x10", "2000x50"])
    a = p.parse_args()
    if a.child:
        child(a.child[0], a.child[1], int(a.child[2]), a.child[3] == "health")
        return
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", a.before], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        rev = [
            subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "--short", r], capture_output=True, text=True
            ).stdout.strip()
            for r in (a.before, "HEAD")
        ]
        print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
        print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
        print(
            f"machine: nproc={os.cpu_count()}, Python {platform.python_version()}; load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at start (the machine is shared)"
        )
        print(f"before: {a.before} ({rev[0]}), after: this tree (HEAD {rev[1]} + working tree)")
        checks = "health" if a.health else "-"
        for size in a.sizes:
            got: dict[str, list[float]] = {"before": [], "after": []}
            pages: dict[str, int] = {}
            for _ in range(a.rounds):
                for name, root in (("before", tmp), ("after", str(ROOT))):
                    out = subprocess.run(
                        [sys.executable, str(HERE), "--child", root, size, str(a.reps), checks],
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                    r = json.loads(out)
                    got[name] += r["times"]
                    pages[name] = r["bytes"]
                    n = r["dests"]
            b, f = min(got["before"]), min(got["after"])
            mb, mf = (sorted(got[k])[len(got[k]) // 2] for k in ("before", "after"))
            print(
                f"{size}{' + health' if a.health else ''}: "
                f"render CPU before min {b * 1000:.0f} ms (median {mb * 1000:.0f}), "
                f"after min {f * 1000:.0f} ms (median {mf * 1000:.0f}); "
                f"{b / n * 1e6:.2f} -> {f / n * 1e6:.2f} us per dest, after/before {f / b:.2f}x (min), "
                f"{mf / mb:.2f}x (median); page {pages['after']} bytes (before {pages['before']})"
            )
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
