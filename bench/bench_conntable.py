"""Aggregate 100k synthetic ip_vs_conn lines with lvstop.conntable.ConnTable.

Mix: ~200 services (3/4 TCP, 1/4 UDP, a few IPv6 and one fwmark), 10 dests each, 5,000 clients,
TCP states weighted like a busy web director, 2% persistence templates.
--demo S reads the demo director's own table instead (lvstop.sources.sim, S services x 10 dests; at
500 that is the exporter's issue-5 case: ~220k lines, ~46k distinct clients, a fifth of them IPv6).
Usage: .venv/bin/python bench/bench_conntable.py [--lines N | --demo S] [--repeat R] [--against REV]
(--against REV times lvstop/conntable.py of that git revision too, interleaved with the current one.)
Target: <= 0.25 s per 100k lines (best of R). The machine is shared: CPU time (process_time) is
reported beside wall time because other jobs inflate the wall clock.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable
from ipaddress import IPv6Address, ip_network
from pathlib import Path
from types import ModuleType
from typing import Any

from procgen import TCP_STATES

from lvstop.conntable import ConnFilter, ConnTable
from lvstop.model import AF_INET, AF_INET6, Dest, FwdMethod, Protocol, Service, ServiceKey
from lvstop.sources.sim import SimSource

HEADER = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData"


def _v6(n: int) -> str:
    return IPv6Address(n).exploded  # what %pI6 prints


def build(n_lines: int, seed: int = 7) -> tuple[list[Service], list[str]]:
    rnd = random.Random(seed)
    services: list[Service] = []
    rows: list[tuple[str, int, str, str]] = []  # (proto, family, vaddr hex, vport hex)
    for i in range(200):
        v6 = i % 50 == 49
        proto = Protocol.UDP if i % 4 == 3 else Protocol.TCP
        family = AF_INET6 if v6 else AF_INET
        vip = 0xCB007100 + i % 200 if not v6 else 0x20010DB8 << 96 | i
        port = 80 + i
        addr = str(IPv6Address(vip)) if v6 else ".".join(str(vip >> s & 255) for s in (24, 16, 8, 0))
        dests = tuple(
            Dest(
                family,
                str(IPv6Address(0x20010DB8 << 96 | 0x1000 | j)) if v6 else f"192.0.2.{10 + j}",
                8080,
                FwdMethod.MASQ,
                1,
            )
            for j in range(10)
        )
        services.append(Service(ServiceKey(family, proto, addr, port), "wlc", dests=dests))
        rows.append((proto.name, family, _v6(vip) if v6 else f"{vip:08X}", f"{port:04X}"))
    lines = [HEADER]
    for _ in range(n_lines):
        pname, family, vaddr, vport = rows[rnd.randrange(len(rows))]
        j = rnd.randrange(10)
        if family == AF_INET6:
            client = _v6(0x20010DB8 << 96 | 0xC0000 | rnd.randrange(5000))
            daddr = _v6(0x20010DB8 << 96 | 0x1000 | j)
        else:
            client = f"{0xC6336400 + rnd.randrange(5000):08X}"
            daddr = f"{0xC0000200 + 10 + j:08X}"
        template = rnd.random() < 0.02
        cport = 0 if template else rnd.randrange(1024, 65536)
        state = "ASSURED" if template else "UDP" if pname == "UDP" else rnd.choice(TCP_STATES)
        lines.append(
            f"{pname:<3} {client} {cport:04X} {vaddr} {vport} {daddr} 1F90 {state:<11} "
            f"{rnd.randrange(900):7d}\n"
        )
    return services, lines


def demo(n_services: int) -> tuple[list[Service], list[str]]:
    """The demo director's services and connection table (the text is made once, not timed)."""
    src = SimSource(seed=1, services=n_services, dests_per_service=10, clock=lambda: 1000.0)
    return list(src.read().services), list(src.conn_lines(sync=False))


def machine() -> str:
    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return f"nproc={nproc} cpu={cpu} python={platform.python_version()}"


def tree_at(rev: str, into: Path) -> dict[str, str]:
    """An environment for a child Python that imports lvstop as of git revision `rev` (extracted into
    `into`): the code before, run beside the current one."""
    root = Path(__file__).resolve().parent.parent
    into.mkdir()
    tar = subprocess.run(["git", "archive", rev, "lvstop"], cwd=root, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=tar.stdout, check=True)
    return {**os.environ, "PYTHONPATH": str(into)}


def older(rev: str) -> ModuleType:
    """lvstop/conntable.py as of git revision `rev`, imported beside the current one."""
    root = Path(__file__).resolve().parent.parent
    show = ["git", "show", f"{rev}:lvstop/conntable.py"]
    text = subprocess.run(show, capture_output=True, text=True, check=True, cwd=root).stdout
    mod = ModuleType(f"conntable_{rev}")
    sys.modules[mod.__name__] = mod  # dataclasses look their module up
    exec(compile(text, f"{rev}:lvstop/conntable.py", "exec"), mod.__dict__)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--demo", type=int, metavar="S", help="the demo's table at S services x 10 dests")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--against", metavar="REV", help="also time conntable.py of git REV, interleaved")
    args = ap.parse_args()
    services, lines = build(args.lines) if args.demo is None else demo(args.demo)
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"machine: {machine()}")
    what = "synthetic" if args.demo is None else f"demo {args.demo} x 10"
    print(f"input: {len(lines) - 1} lines ({what}), {len(services)} services")
    tables: dict[str, Callable[[list[Service]], ConnTable]] = {"": ConnTable}
    if args.against:
        tables[f" [{args.against}]"] = older(args.against).ConnTable
    cases = {
        "no filter": None,
        "filter service": ConnFilter(service=services[0].key),
        "filter state ESTABLISHED": ConnFilter(state="ESTABLISHED"),
        "filter client 198.51/16": ConnFilter(client_prefix=ip_network("198.51.0.0/16")),
    }
    for name, flt in cases.items():
        wall: dict[str, list[float]] = {label: [] for label in tables}
        cpu: dict[str, list[float]] = {label: [] for label in tables}
        last: dict[str, Any] = {}  # the summary of each (the older module's own ConnSummary class)
        for _ in range(args.repeat):
            for label, make in tables.items():  # interleaved: the machine's load hits both alike
                table = make(services)
                t, c = time.perf_counter(), time.process_time()
                last[label] = table.summarize(lines, sync=False, budget_s=None, filters=flt)
                wall[label].append(time.perf_counter() - t)
                cpu[label].append(time.process_time() - c)
        for label in tables:
            w, u, s = wall[label], cpu[label], last[label]
            print(
                f"{name + label:<36} wall best {min(w):.3f} s median {sorted(w)[len(w) // 2]:.3f} s | "
                f"cpu best {min(u):.3f} s ({min(u) / (len(lines) - 1) * 1e6:.2f} us/line) | "
                f"matched={s.matched} services={len(s.by_service)} unattributed={s.unattributed} "
                f"partial={s.partial}"
            )
    with open("/proc/loadavg") as f:
        print(f"load average after: {' '.join(f.read().split()[:3])}")


if __name__ == "__main__":
    main()
