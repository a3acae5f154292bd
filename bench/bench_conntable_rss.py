"""The connection-table reader's memory at 100k dests: what one read adds to a process's RSS.

The exporter and the TUI read the table every 60 s against the poller's latest snapshot (its services
a ServiceRows over the columnar table). Each side is a fresh process that reads a generated /proc
(bench/procgen.py, S services x D dests and N conn entries) with ProcSource, then does one
ConnTableReader.refresh_now() (detail=False, as the exporter; or detail=True, as the TUI) with the
snapshot's services (a ServiceRows, as the poller publishes). Nothing was read before: the figures
include what the first read allocates once (numpy's, the regex's) alike on both sides.
Reported: RSS before the read, the peak during it (VmHWM, reset just before it), and RSS after it
while the snapshot is still alive (rows cached in it stay), each as what the read added; CPU of the
read too.
--against REV runs lvstop as of git revision REV beside it (the code before), in the same rounds.

Usage: .venv/bin/python bench/bench_conntable_rss.py [--services S] [--dests D] [--conns N]
                                                      [--repeat R] [--against REV]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_conntable import machine, tree_at
from procgen import write

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import sys, time
from lvstop.conntable import ConnTableReader
from lvstop.sources.procfs import ProcSource

def status(field):
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith(field)) / 1024

src = ProcSource(root=sys.argv[1], hz=250)
snap = src.read()
reader = ConnTableReader(src, budget_s=1e9, services=lambda: snap.services, detail=sys.argv[2] == "detail")
before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) restarts from here
t = time.process_time()
s = reader.refresh_now()
cpu = time.process_time() - t
rows = sum(r is not None for r in snap.services._rows)
print(before, status("VmHWM:"), status("VmRSS:"), cpu, s.total, len(s.by_service), s.unattributed, rows)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=2000)
    ap.add_argument("--dests", type=int, default=50)
    ap.add_argument("--conns", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--against", metavar="REV")
    args = ap.parse_args()
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="lvstop-bench-connrss-") as t:
        tmp = Path(t)
        write(tmp / "proc", args.services, args.dests, args.conns)
        print(f"input: bench/procgen.py {args.services} x {args.dests}, {args.conns} conn entries")
        pythons: dict[str, dict[str, str] | None] = {"lvstop": None}
        if args.against:
            pythons[f"lvstop@{args.against}"] = tree_at(args.against, tmp / "base")
        for mode in ("summary", "detail"):
            best: dict[str, list[float]] = {}
            found: dict[str, str] = {}
            for _ in range(args.repeat):
                for name, env in pythons.items():
                    out = subprocess.run(
                        [sys.executable, "-c", CHILD, str(tmp / "proc"), mode],
                        env=env,
                        cwd="/",
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout.split()
                    before, peak, after, cpu = (float(x) for x in out[:4])
                    found[name] = " ".join(out[4:])
                    row = [peak - before, after - before, cpu, before]
                    best[name] = [min(a, b) for a, b in zip(best.get(name, row), row, strict=True)]
            for name, (grew, kept, cpu, before) in best.items():
                print(
                    f"{name:<22} detail={mode == 'detail'!s:<5}: peak +{grew:5.1f} MB, after +{kept:5.1f} MB"
                    f" (RSS before {before:.1f} MB), read {cpu:.3f} s CPU"
                    f" (entries, services, unattributed, service rows made: {found[name]})"
                )
    with open("/proc/loadavg") as f:
        print(f"load average after: {' '.join(f.read().split()[:3])}")


if __name__ == "__main__":
    main()
