"""Do the performance tricks still pay now that columns carry the poll? Each measured with and without.

    .venv/bin/python bench/bench_tricks.py [--rounds 2]

On a /proc of 2,000 services x 50 dests made by bench/procgen.py:
  rows    model.fast_constructor (a class swap) against the dataclasses' own __init__: DestTable.rows() of
          100k dests, as `lvstop list`, the JSON snapshot page and the connection-table reader need them.
  gc      lvstop.gcpolicy (collector paused during builds, what they leave frozen) against CPython's defaults:
          8 polls + /metrics renders in one process, without and with every row built after each poll.
  malloc  lvstop.exporter.main.tune_malloc (2 arenas, fixed mmap threshold) against glibc's defaults: peak
          RSS of lvstop-exporter after 6 scrapes and 3 /api/v1/snapshot pages, 2.1 s apart.
Each child process measures one variant; variants alternate so that both see the same machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve()


def child_rows(root: str) -> dict[str, float]:
    import gc

    from lvstop import model
    from lvstop.model import Counters, Dest, Rates
    from lvstop.poller import Poller
    from lvstop.sources.procfs import ProcSource

    table = Poller(ProcSource(root)).poll_once().table.dests
    fast = (model._new_dest, model._new_counters, model._new_rates)
    out: dict[str, list[float]] = {"fast_constructor": [], "dataclass __init__": []}
    for _ in range(3):
        for name, ctors in (("fast_constructor", fast), ("dataclass __init__", (Dest, Counters, Rates))):
            model._new_dest, model._new_counters, model._new_rates = ctors  # type: ignore[assignment]
            gc.disable()  # as ServiceRows builds them
            t0 = time.process_time()
            rows = table.rows()
            out[name].append(time.process_time() - t0)
            del rows
            gc.enable()
            gc.collect()
    return {k: min(v) for k, v in out.items()}


def child_gc(root: str, variant: str, rows: bool) -> dict[str, float]:
    import contextlib
    import gc

    from lvstop import gcpolicy

    if variant == "plain":
        gcpolicy.paused = contextlib.nullcontext  # type: ignore[assignment]
    else:
        gcpolicy.manage()
    from lvstop.exporter.metrics import Health, Inputs, render_inputs
    from lvstop.poller import Poller
    from lvstop.sources.procfs import ProcSource

    pauses: list[float] = []
    started = [0.0]

    def on_gc(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - started[0])

    gc.callbacks.append(on_gc)
    poller = Poller(ProcSource(root))
    cpu0 = time.process_time()
    for _ in range(8):
        snap = poller.poll_once()
        with gcpolicy.paused():
            render_inputs(Inputs(snap, Health("proc", True, 0.0, 0.0)), keep_limit=0)
        if rows:
            list(snap.services)
    return {
        "cpu": time.process_time() - cpu0,
        "n": len(pauses),
        "gc": sum(pauses),
        "max": max(pauses, default=0),
    }


EXPORTER = """
import sys
import lvstop.exporter.main as m
if sys.argv.pop(1) == "off":
    m.tune_malloc = lambda: False
sys.exit(m.main())
"""


def malloc_run(root: str, variant: str) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as state:
        proc = subprocess.Popen(
            [sys.executable, "-c", EXPORTER, variant, "--source", "proc", "--proc-root", root,
             "--web.listen-address", f"127.0.0.1:{port}", "--drain-state", f"{state}/d.json",
             "--audit-log", f"{state}/a.jsonl"],
            cwd=ROOT, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(600):
                try:
                    urllib.request.urlopen(url + "/-/ready", timeout=5).read()
                    break
                except OSError:
                    time.sleep(0.2)
            for i in range(6):
                req = urllib.request.Request(url + "/metrics", headers={"Accept-Encoding": "gzip"})
                urllib.request.urlopen(req, timeout=60).read()
                if i % 2:
                    urllib.request.urlopen(url + "/api/v1/snapshot", timeout=60).read()
                time.sleep(2.1)
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
            return float("nan")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def run_child(*args: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(HERE), "--child", *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        sys.path.insert(0, str(ROOT))
        kind, root, *rest = a.child
        if kind == "rows":
            print(json.dumps(child_rows(root)))
        else:
            print(json.dumps(child_gc(root, rest[0], rest[1] == "rows")))
        return
    sys.path.insert(0, str(ROOT / "bench"))
    import procgen

    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"machine: nproc={os.cpu_count()}, Python {platform.python_version()}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at start (the machine is shared)")  # fmt: skip
    with tempfile.TemporaryDirectory() as root:
        procgen.write(Path(root), 2000, 50, 1000)
        print("\nrows: DestTable.rows() of 100,000 dests, CPU, best of 3 per process")
        for r in range(a.rounds):
            got = run_child("rows", root)
            print(f"  round {r + 1}: " + ", ".join(f"{k} {v:.3f} s" for k, v in got.items()))
        print("\ngc: 8 polls + renders of 100,000 dests, CPU of the process and the collector's pauses")
        for rows in ("norows", "rows"):
            for r in range(a.rounds):
                for variant in ("gcpolicy", "plain"):
                    g = run_child("gc", root, variant, rows)
                    print(
                        f"  {'every row built after each poll' if rows == 'rows' else 'no row built':32s} "
                        f"round {r + 1} {variant:8s}: CPU {g['cpu']:.2f} s, {g['n']:.0f} collections, "
                        f"{g['gc'] * 1000:.0f} ms, longest {g['max'] * 1000:.0f} ms"
                    )
        print("\nmalloc: lvstop-exporter --source proc at 100,000 dests, peak RSS (VmHWM)")
        for r in range(a.rounds):
            for variant in ("on", "off"):
                print(
                    f"  round {r + 1} tune_malloc {variant:3s}: {malloc_run(root, variant):.0f} MB",
                    flush=True,
                )
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
