"""CPU of one /metrics render of a fresh snapshot (no rows built yet), this tree against a git ref.

    .venv/bin/python bench/bench_render.py --before main          # 500x10 and 2,000x50, 3 rounds each
    .venv/bin/python bench/bench_render.py --before main --rounds 5 2000x50

Each measurement runs in a child process (`--child ROOT SIZE`) on the demo's synthetic director, polled
twice so that rates exist; the children of the two trees alternate, so both see the same machine load.
A render is timed on the thread's CPU clock, with the collector paused as the exporter renders.
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

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]


def child(root: str, size: str, reps: int) -> None:
    sys.path.insert(0, root)
    import dataclasses

    from lvstop import gcpolicy
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
    times = []
    size_out = 0
    for _ in range(reps):
        table = snap.services.table if isinstance(snap.services, ServiceRows) else snap.table
        fresh = dataclasses.replace(snap, services=ServiceRows(table))  # no row built yet
        t0 = time.thread_time()
        with gcpolicy.paused():
            body = render_inputs(Inputs(fresh, health), keep_limit=0)
        times.append(time.thread_time() - t0)
        size_out = body.size
    print(json.dumps({"times": times, "bytes": size_out, "dests": services * dests}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--before", default="main", help="git ref to compare with (default main)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=3, help="renders per child")
    p.add_argument("sizes", nargs="*", default=["500x10", "2000x50"])
    a = p.parse_args()
    if a.child:
        child(a.child[0], a.child[1], int(a.child[2]))
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
        for size in a.sizes:
            got: dict[str, list[float]] = {"before": [], "after": []}
            pages: dict[str, int] = {}
            for _ in range(a.rounds):
                for name, root in (("before", tmp), ("after", str(ROOT))):
                    out = subprocess.run(
                        [sys.executable, str(HERE), "--child", root, size, str(a.reps)],
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
                f"{size}: render CPU before min {b * 1000:.0f} ms (median {mb * 1000:.0f}), "
                f"after min {f * 1000:.0f} ms (median {mf * 1000:.0f}); "
                f"{b / n * 1e6:.2f} -> {f / n * 1e6:.2f} us per dest, after/before {f / b:.2f}x (min), "
                f"{mf / mb:.2f}x (median); page {pages['after']} bytes (before {pages['before']})"
            )
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
