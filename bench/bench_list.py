"""S8 and /proc's S3 (issue 9): `lvstop list -n --source proc` end to end, and /proc polls, 1k vs 100k dests.

S8: a whole `lvstop list -n --source proc --proc-root DIR` in a new process at 100 x 10 and 2,000 x 50
(bench/procgen.py tables): CPU (user + sys, from wait4) and peak RSS; the figure is the difference
per dest, (CPU at 100k - CPU at 1k) / 99,000. Targets: <= 3 us per dest, <= 50 MB at 100k.
--against REV runs lvstop as of git revision REV beside it, interleaved (the peer: the code before).
S3 (/proc): warm polls of lvstop's Poller over a ProcSource, CPU per dest per poll, when the file did
not change, when a tenth of the dest lines changed, and when every one did (target <= 3 us, flat).

Usage: .venv/bin/python bench/bench_list.py [--repeat R] [--polls P] [--against REV]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_conntable import machine
from procgen import write

ROOT = Path(__file__).resolve().parent.parent
TABLES = {"1k": (100, 10), "100k": (2000, 50)}


def run_list(proc_root: Path, pythonpath: str | None) -> tuple[float, float]:
    """(CPU seconds, peak RSS MB) of one `lvstop list -n --source proc` process."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    argv = [sys.executable, "-m", "lvstop", "list", "-n", "--source", "proc", "--proc-root", str(proc_root)]
    # cwd: not the checkout, whose lvstop `-m` would import ahead of PYTHONPATH's
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd="/")
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise SystemExit(f"{' '.join(argv)} exited {p.returncode}")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def export(rev: str, into: Path) -> str:
    """The package as of `rev`, for PYTHONPATH."""
    tar = subprocess.run(["git", "archive", rev, "lvstop"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=tar, check=True)
    return str(into)


def s8(dirs: dict[str, Path], repeat: int, against: str | None, tmp: Path) -> None:
    versions: dict[str, str | None] = {"current": None}
    if against:
        (tmp / "base").mkdir()
        versions[against] = export(against, tmp / "base")
    cpu: dict[tuple[str, str], list[float]] = {}
    rss: dict[tuple[str, str], list[float]] = {}
    for _ in range(repeat):
        for name, path in versions.items():  # interleaved: the machine's load hits both alike
            for table, d in dirs.items():
                c, r = run_list(d, path)
                cpu.setdefault((name, table), []).append(c)
                rss.setdefault((name, table), []).append(r)
    print(f"S8: lvstop list -n --source proc, best CPU of {repeat} runs (user+sys), peak RSS")
    per: dict[str, float] = {}
    for name in versions:
        small, big = min(cpu[(name, "1k")]), min(cpu[(name, "100k")])
        per[name] = (big - small) / 99_000 * 1e6
        print(
            f"  {name:<10} 1k {small:.3f} s {max(rss[(name, '1k')]):.1f} MB | 100k {big:.3f} s"
            f" {max(rss[(name, '100k')]):.1f} MB | difference per dest {per[name]:.2f} us"
        )
    if against:
        print(f"  current / {against}: {per['current'] / per[against]:.2f}x per dest")
    big_rss = max(rss[("current", "100k")])
    print(
        f"  target <= 3 us per dest: {'met' if per['current'] <= 3 else 'NOT met'} ({per['current']:.2f} us);"
        f" <= 50 MB at 100k: {'met' if big_rss <= 50 else 'NOT met'} ({big_rss:.1f} MB)"
    )


_DEST = re.compile(r"^(  -> \S+\s+\S+\s+\d+\s+)(\d+)", re.MULTILINE)


def _bump(text: str, every: int, tick: int) -> str:
    """Every `every`-th dest line's ActiveConn changed (as traffic does between two polls)."""
    n = 0

    def sub(m: re.Match[str]) -> str:
        nonlocal n
        n += 1
        return m.group(1) + (str(int(m.group(2)) + tick) if n % every == 0 else m.group(2))

    return _DEST.sub(sub, text)


def s3(dirs: dict[str, Path], polls: int) -> None:
    from lvstop.poller import Poller
    from lvstop.sources.procfs import ProcSource

    print(f"S3 (/proc): warm polls through Poller(ProcSource), best CPU of {polls} polls per dest")
    for table, d in dirs.items():
        n_dests = TABLES[table][0] * TABLES[table][1]
        ip_vs = d / "net" / "ip_vs"
        original = ip_vs.read_text()
        for label, every in (("unchanged", 0), ("1/10 of lines changed", 10), ("all lines changed", 1)):
            # the texts are made before timing: only the poll is measured
            texts = [_bump(original, every, t) if every else original for t in range(polls + 2)]
            poller = Poller(ProcSource(root=str(d), hz=250), interval=2.0)
            best = float("inf")
            for i, text in enumerate(texts):
                ip_vs.write_text(text)
                c = time.process_time()
                poller.poll_once()
                if i >= 2:  # warm: the source's caches and the estimator have seen two polls
                    best = min(best, time.process_time() - c)
            ip_vs.write_text(original)
            per = best * 1e6 / n_dests
            print(f"  {table:>5} {label:<22} {per:6.2f} us per dest ({best * 1e3:.1f} ms per poll)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--polls", type=int, default=5)
    ap.add_argument("--against", metavar="REV")
    args = ap.parse_args()
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="lvstop-bench-list-") as t:
        tmp = Path(t)
        dirs = {}
        for table, (services, dests) in TABLES.items():
            dirs[table] = tmp / table
            write(dirs[table], services, dests, n_conns=0)
        print(f"input: bench/procgen.py tables {', '.join(f'{s} x {d}' for s, d in TABLES.values())}")
        s8(dirs, args.repeat, args.against, tmp)
        s3(dirs, args.polls)
    with open("/proc/loadavg") as f:
        print(f"load average after: {' '.join(f.read().split()[:3])}")


if __name__ == "__main__":
    main()
