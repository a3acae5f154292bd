"""S7 (issue 9): aggregating 1M ip_vs_conn lines in-process vs awk doing the same counts on the same file.

The file is bench/procgen.py's (200 services x 10 dests; IPv4 and IPv6, fwmark templates, PE data,
20,000 clients per family). lvstop's side is a fresh process that reads the file through ProcSource
and aggregates it with ConnTable.summarize (every count of the summary: per key, service, dest,
state, template, client; attribution to services); its figure is the CPU of that read + aggregation.
awk's side counts entries per (protocol, vaddr, vport, daddr, dport, state) and per client of the
non-template entries, and prints how many of each it found: its figure is the whole process's CPU.
Both run interleaved, best of R. Target: lvstop / awk <= 1.5x.
--against REV times lvstop as of git revision REV too (the code before), in the same rounds.

Usage: .venv/bin/python bench/bench_conntable_awk.py [--lines N] [--repeat R] [--against REV]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_conntable import machine, tree_at
from procgen import write

ROOT = Path(__file__).resolve().parent.parent
AWK = (
    'NR > 1 { k[$1 " " $4 " " $5 " " $6 " " $7 " " $8]++; if ($3 != "0000") c[$2]++ } '
    "END { for (x in k) n++; for (y in c) m++; print n, m }"
)
CHILD = """
import sys, time
from lvstop.conntable import ConnTable
from lvstop.sources.procfs import ProcSource
src = ProcSource(root=sys.argv[1], hz=250)
services = src.read().services
t = time.process_time()
s = ConnTable(services).summarize(src.conn_lines(), sync=False, budget_s=None, filters=None)
cpu = time.process_time() - t
print(cpu, s.total, len(s.by_service), len(s.by_dest), s.distinct_clients, s.unattributed)
"""


def cpu_of(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, cwd="/", text=True)
    assert p.stdout is not None
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{argv[0]} failed")
    return usage.ru_utime + usage.ru_stime, out.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--against", metavar="REV")
    args = ap.parse_args()
    awk = shutil.which("awk")
    assert awk
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"machine: {machine()}; awk: {os.path.realpath(awk)}")
    with tempfile.TemporaryDirectory(prefix="lvstop-bench-s7-") as t:
        tmp = Path(t)
        write(tmp / "proc", 200, 10, args.lines)
        conn = tmp / "proc" / "net" / "ip_vs_conn"
        print(f"input: {args.lines} lines ({conn.stat().st_size / 1e6:.0f} MB), bench/procgen.py 200 x 10")
        pythons: dict[str, dict[str, str] | None] = {"lvstop": None}
        if args.against:
            pythons[f"lvstop@{args.against}"] = tree_at(args.against, tmp / "base")
        best: dict[str, float] = {}
        found: dict[str, str] = {}
        for _ in range(args.repeat):
            c, found["awk"] = cpu_of([awk, AWK, str(conn)])
            best["awk"] = min(best.get("awk", c), c)
            for name, env in pythons.items():
                _, out = cpu_of([sys.executable, "-c", CHILD, str(tmp / "proc")], env)
                c = float(out.split()[0])
                found[name] = " ".join(out.split()[1:])
                best[name] = min(best.get(name, c), c)
    print(f"awk: {best['awk']:.3f} s CPU (keys, clients: {found['awk']})")
    for name in pythons:
        ratio = best[name] / best["awk"]
        print(
            f"{name}: {best[name]:.3f} s CPU (entries, services, dests, clients, unattributed: {found[name]})"
            f" = {ratio:.2f}x awk"
        )
    r = best["lvstop"] / best["awk"]
    print(f"target <= 1.5x awk: {'met' if r <= 1.5 else 'NOT met'} ({r:.2f}x)")
    with open("/proc/loadavg") as f:
        print(f"load average after: {' '.join(f.read().split()[:3])}")


if __name__ == "__main__":
    main()
