"""Benchmark step (issue 9's S1 and S2), not a pass/fail test: it prints its figures as `[note]` lines.

In a namespace of its own, `ipvsadm -R` loads 500 services x 10 dests, then 2,000 x 50 (100k dests),
and for each table measures, side by side on the same kernel and table:
- S1: one warm full poll through lvstop's Poller (read + all processing) / `ipvsadm -Ln --stats --exact`;
- S2: `lvstop list -n --stats --exact` end to end (a new process) / `ipvsadm -Ln --stats --exact`.
TCG slows both sides alike; the ratio is the figure (targets: S1 <= 1.0x at 500x10 and <= 0.8x at
2,000x50; S2 <= 3.0x and <= 1.2x). It runs after the other kernel tests (file order) and removes its
namespace, whose table would otherwise hide services from /proc reads elsewhere (kernel 6.1).
The only assertion: lvstop printed what ipvsadm printed (a figure for a wrong listing means nothing).

With LVSTOP_BENCH_PEER=DIR (a directory holding another checkout's lvstop package, byte-compiled: the
guest writes no .pyc), the same table is also measured with that code, side by side: S1 in a new
process for both (two polls, the second timed) and S2 with DIR first on PYTHONPATH.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lvstop.poller import Poller
from lvstop.sources.netlink import NetlinkSource

from .lab import PREFIX, run, sh

pytestmark = pytest.mark.kernel

BENCH_NS = PREFIX + "bench"
TABLES = ((500, 10), (2000, 50))
IPVSADM = ("ipvsadm", "-Ln", "--stats", "--exact")
LVSTOP = (sys.executable, "-m", "lvstop", "list", "-n", "--stats", "--exact")
PEER = os.environ.get("LVSTOP_BENCH_PEER")
# S1 in a process of its own (for the side-by-side with PEER): the second poll's seconds
WARM_POLL = (
    "import time; from lvstop.poller import Poller; from lvstop.sources.netlink import NetlinkSource\n"
    "p = Poller(NetlinkSource()); p.poll_once(); t = time.perf_counter(); p.poll_once()\n"
    "print(time.perf_counter() - t)"
)


def rules(services: int, dests: int) -> str:
    """`ipvsadm -R` input: VIPs in 203.0.113.0/24 (ports from 1000), dests in 192.0.2.0/24 and
    198.51.100.0/24, masquerading, weights 1-3."""
    out = []
    for i in range(services):
        svc = f"-t 203.0.113.{1 + i % 250}:{1000 + i // 250}"
        out.append(f"-A {svc} -s wlc")
        for j in range(dests):
            rs = f"192.0.2.{1 + j}" if j < 250 else f"198.51.100.{1 + j - 250}"
            out.append(f"-a {svc} -r {rs}:8080 -m -w {1 + (i + j) % 3}")
    return "\n".join(out) + "\n"


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _in_ns(argv: tuple[str, ...], path: str | None = None) -> str:
    """argv's output, run in the bench namespace (with `path` first on PYTHONPATH, from / so that the
    repository's lvstop, first on sys.path from the working directory, does not hide it)."""
    if path is not None:
        argv = ("env", "-C", "/", f"PYTHONPATH={path}", *argv)
    return run(list(argv), ns=BENCH_NS, timeout=900).stdout


@pytest.fixture
def bench_ns() -> Iterator[str]:
    run(["modprobe", "ip_vs"])
    run(["ip", "netns", "add", BENCH_NS])
    try:
        sh(BENCH_NS, "ip link set lo up")
        yield BENCH_NS
    finally:
        run(["ip", "netns", "del", BENCH_NS], check=False)


def _bench(ns: str, services: int, dests: int) -> None:
    table = f"{services}x{dests}"
    run(["ipvsadm", "-C"], ns=ns)
    text = rules(services, dests)
    load = _timed(lambda: run(["ipvsadm", "-R"], ns=ns, input=text, timeout=900))
    print(f"[note] bench {table}: ipvsadm -R loaded {services * dests} dests in {load:.1f} s")

    source = NetlinkSource(netns=ns)
    try:
        poller = Poller(source, interval=2.0)
        poller.poll_once()  # the first poll has no previous sample; S1 is a warm one
        poll = _timed(poller.poll_once)
    finally:
        source.close()
    out: list[str] = []
    ipvsadm = _timed(lambda: out.append(_in_ns(IPVSADM)))  # after the polls: the kernel's caches are warm
    listing = _timed(lambda: out.append(_in_ns(LVSTOP)))
    assert out[1] == out[0], f"{table}: lvstop list differs from ipvsadm -Ln --stats --exact"
    print(
        f"[note] bench {table}: S1 warm poll {poll:.2f} s / ipvsadm -Ln --stats --exact {ipvsadm:.2f} s"
        f" = {poll / ipvsadm:.2f}x; S2 lvstop list -n --stats --exact {listing:.2f} s"
        f" = {listing / ipvsadm:.2f}x"
    )
    if PEER:
        _side_by_side(table, out[0])


def _side_by_side(table: str, expected: str) -> None:
    """S1 (new process) and S2 of this code and of PEER's, alternating, with ipvsadm between."""
    here = str(Path(__file__).resolve().parents[2])  # this checkout, also from /
    for label, path in (("this", here), ("peer", PEER), ("this", here), ("peer", PEER)):
        poll = float(_in_ns((sys.executable, "-c", WARM_POLL), path))
        ipvsadm = _timed(lambda: _in_ns(IPVSADM))
        t = time.perf_counter()
        got = _in_ns(LVSTOP, path)
        listing = time.perf_counter() - t
        assert got == expected, f"{table}: {label} lvstop list differs from ipvsadm"
        print(
            f"[note] bench {table} {label}: S1 warm poll {poll:.2f} s / ipvsadm {ipvsadm:.2f} s"
            f" = {poll / ipvsadm:.2f}x; S2 {listing:.2f} s = {listing / ipvsadm:.2f}x"
        )


def test_bench_s1_s2(bench_ns: str) -> None:
    # where S2's fixed cost goes: the interpreter, then the imports `lvstop list` needs
    start = {
        what: _timed(functools.partial(_in_ns, (sys.executable, "-c", code)))
        for what, code in (
            ("python", "pass"),
            ("python + import numpy", "import numpy"),
            ("python + import lvstop.cli", "import lvstop.cli"),
            ("python + lvstop list's imports", "import lvstop.cli, lvstop.sources.netlink"),
        )
    }
    print("[note] bench start-up: " + ", ".join(f"{k} {v:.2f} s" for k, v in start.items()))
    for services, dests in TABLES:
        _bench(bench_ns, services, dests)
    run(["ipvsadm", "-C"], ns=bench_ns)
