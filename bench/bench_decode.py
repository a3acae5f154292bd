"""Decode a synthetic IPVS netlink dump of 2,000 services x 50 dests (built with lvstop's encoder).

Measures what NetlinkSource.read() did with the bytes once the kernel has answered: decode the
service dump, decode one dest dump per service, attach the dests to their services (rows). Target: <= 150 ms.
Then the columnar decode a poll does now (the service dump, every dest dump into one DestTable, the dumps
back to back in one buffer as NetlinkSource receives them), beside --peer's lvstop in alternating processes.

    .venv/bin/python bench/bench_decode.py [--services 2000] [--dests 50] [--repeat 5] [--peer DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import inspect
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lvstop.model import AF_INET, Counters, Dest, FwdMethod, Protocol, Rates, Service, ServiceKey
from lvstop.sources import wire

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import netlink_replies as replies

FAMILY_ID = 0x24  # whatever id the kernel gave the IPVS family
TARGET_MS = 150


def synthetic(n_services: int, n_dests: int, seed: int = 7) -> tuple[bytes, list[tuple[ServiceKey, bytes]]]:
    """A service dump and one dest dump per service, as the kernel would send them (seq per request)."""
    rnd = random.Random(seed)
    pool = [f"192.0.2.{i % 250 + 1}" if i < 250 else f"198.51.100.{i % 250 + 1}" for i in range(500)]
    services = []
    dumps = []
    for i in range(n_services):
        vip = f"203.0.113.{i % 250 + 1}"
        key = (
            ServiceKey.mark(i + 1)
            if i % 10 == 9
            else ServiceKey(AF_INET, Protocol.UDP if i % 5 == 4 else Protocol.TCP, vip, 1024 + i)
        )
        svc = Service(key, rnd.choice(["wlc", "rr", "wrr", "mh"]), counters=counters(rnd), rates=rates(rnd))
        services.append(svc)
        dests = [
            Dest(
                AF_INET,
                pool[(i * 7 + j) % len(pool)],
                8080,
                FwdMethod.MASQ if j % 4 else FwdMethod.ROUTE,
                rnd.randrange(0, 100),
                active_conns=rnd.randrange(0, 5000),
                inactive_conns=rnd.randrange(0, 20000),
                persist_conns=0,
                counters=counters(rnd),
                rates=rates(rnd),
            )
            for j in range(n_dests)
        ]
        seq = i + 2
        msgs = [
            wire.message(
                FAMILY_ID,
                wire.CMD_NEW_DEST,
                wire.nla(wire.CMD_ATTR_DEST, replies.encode_dest(d)),
                flags=wire.NLM_F_MULTI,
                seq=seq,
            )
            for d in dests
        ]
        dumps.append((key, b"".join(msgs) + replies.done(seq)))
    svc_msgs = [
        wire.message(
            FAMILY_ID,
            wire.CMD_NEW_SERVICE,
            wire.nla(wire.CMD_ATTR_SERVICE, replies.encode_service(s)),
            flags=wire.NLM_F_MULTI,
            seq=1,
        )
        for s in services
    ]
    return b"".join(svc_msgs) + replies.done(1), dumps


def counters(rnd: random.Random) -> Counters:
    conns = rnd.randrange(0, 10**9)
    pkts = conns * rnd.randrange(5, 50)
    return Counters(
        conns, pkts, pkts * 9 // 10, pkts * rnd.randrange(60, 1500), pkts * rnd.randrange(60, 9000)
    )


def rates(rnd: random.Random) -> Rates:
    cps = rnd.randrange(0, 5000)
    pps = cps * rnd.randrange(5, 50)
    return Rates(cps, pps, pps * 9 // 10, pps * rnd.randrange(60, 1500), pps * rnd.randrange(60, 9000))


def decode_all(svc_dump: bytes, dumps: list[tuple[ServiceKey, bytes]], *, fast: bool = True) -> list[Service]:
    """The decoding half of NetlinkSource.read() (the socket half is the kernel's time)."""
    services = wire.decode_services(svc_dump, FAMILY_ID, fast=fast)
    out = []
    for svc, (key, data) in zip(services, dumps, strict=True):
        assert svc.key == key
        dests = wire.decode_dests(data, FAMILY_ID, key.family, fast=fast)
        out.append(dataclasses.replace(svc, dests=tuple(dests)))
    return out


def columnar(svc_dump: bytes, dumps: list[tuple[ServiceKey, bytes]]) -> Callable[[], object]:
    """The decode of a poll on columns, in this process's lvstop (whichever API it has: the dumps as a
    list of replies, or back to back in one buffer with each lone NLMSG_DONE left out)."""
    families = [key.family for key, _ in dumps]
    if len(inspect.signature(wire.decode_dest_table).parameters) == 3:  # a peer from before the buffer
        replies_ = [d for _, d in dumps]
        return lambda: (
            wire.decode_services(svc_dump, FAMILY_ID),
            wire.decode_dest_table(replies_, FAMILY_ID, families),  # type: ignore[call-arg, arg-type]
        )
    buf = bytearray()
    spans = []
    for _, d in dumps:
        body = d[: -wire.DONE_LEN]
        spans.append((len(buf), len(buf) + len(body), True))
        buf += body
    return lambda: (
        wire.decode_services(svc_dump, FAMILY_ID),
        wire.decode_dest_table(buf, spans, FAMILY_ID, families),
    )


def columnar_one(args: argparse.Namespace) -> None:
    svc_dump, dumps = synthetic(args.services, args.dests)
    fn = columnar(svc_dump, dumps)
    fn()  # compiled layouts, first faults
    cpu = [timed(fn, gc_paused=True)[1] for _ in range(args.repeat)]
    print(json.dumps({"min": min(cpu), "median": statistics.median(cpu)}))


def columnar_side_by_side(args: argparse.Namespace) -> None:
    code = {"this": None, "peer": args.peer} if args.peer else {"this": None}
    n = args.services * args.dests
    for _ in range(args.rounds):
        for label, path in code.items():
            env = dict(os.environ, PYTHONPATH=path) if path else None
            cmd = [sys.executable, __file__, "--columnar-one", "--services", str(args.services)]
            cmd += ["--dests", str(args.dests), "--repeat", str(args.repeat)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            r = json.loads(out.splitlines()[-1])
            where = f"{label}: {path}" if path else label
            lo, mid = r["min"] * 1e3, r["median"] * 1e3
            print(
                f"columnar decode ({where}), {args.repeat} runs, gc paused: CPU min {lo:.1f} ms, "
                f"median {mid:.1f} ms ({r['median'] / n * 1e6:.2f} us per dest)"
            )


def timed(fn: Callable[[], object], *, gc_paused: bool) -> tuple[float, float]:
    """(wall, CPU) seconds of one call. CPU time is what the decode costs the director; wall time on a
    shared machine also counts waiting for a core."""
    gc.collect()
    if gc_paused:
        gc.disable()
    try:
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - w0, time.process_time() - c0
    finally:
        gc.enable()


def machine() -> str:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: nproc={os.cpu_count()}, cpu={model}, python {platform.python_version()}, "
        f"load average at start {load}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--services", type=int, default=2000)
    p.add_argument("--dests", type=int, default=50)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--peer", help="a directory whose lvstop package is the peer of the columnar decode")
    p.add_argument("--rounds", type=int, default=2, help="alternating runs of the columnar decode per code")
    p.add_argument("--columnar-one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.columnar_one:
        columnar_one(args)
        return
    print(f"command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(f"date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}")
    print(machine())
    svc_dump, dumps = synthetic(args.services, args.dests)
    n_dests = args.services * args.dests
    size = len(svc_dump) + sum(len(d) for _, d in dumps)
    print(
        f"input: {args.services} services x {args.dests} dests = {n_dests} dest messages, {size / 1e6:.1f} MB"
    )
    check = decode_all(svc_dump, dumps)
    assert len(check) == args.services and sum(len(s.dests) for s in check) == n_dests
    assert check == decode_all(svc_dump, dumps, fast=False)[: args.services]
    del check
    verdict = ""
    for label, paused in (("gc paused (as NetlinkSource.read does)", True), ("gc enabled", False)):
        runs = [timed(lambda: decode_all(svc_dump, dumps), gc_paused=paused) for _ in range(args.repeat)]
        wall = [w for w, _ in runs]
        cpu = [c for _, c in runs]
        verdict = (
            verdict or f"target <= {TARGET_MS} ms: {'met' if min(cpu) * 1e3 <= TARGET_MS else 'NOT met'}"
        )
        print(
            f"decode, {label}, {args.repeat} runs: CPU min {min(cpu) * 1e3:.0f} ms, median "
            f"{statistics.median(cpu) * 1e3:.0f} ms ({min(cpu) / n_dests * 1e6:.2f} us per dest); "
            f"wall min {min(wall) * 1e3:.0f} ms, median {statistics.median(wall) * 1e3:.0f} ms"
        )

    def then_collect() -> None:
        decode_all(svc_dump, dumps)
        gc.collect()  # the collection the paused read defers (the heap now holds the new objects)

    cpu = [c for _, c in (timed(then_collect, gc_paused=True) for _ in range(args.repeat))]
    print(
        f"decode with gc paused plus one full gc.collect() after: CPU min {min(cpu) * 1e3:.0f} ms, "
        f"median {statistics.median(cpu) * 1e3:.0f} ms"
    )
    print(verdict + f" (CPU min of the gc-paused decode, {args.services} x {args.dests})")
    columnar_side_by_side(args)
    few = max(1, args.services // 20)
    _, ref = timed(
        lambda: [wire.decode_dests(d, FAMILY_ID, AF_INET, fast=False) for _, d in dumps[:few]], gc_paused=True
    )
    print(
        f"reference path only (attribute walk, no compiled layouts), {few} services x {args.dests} dests: "
        f"{ref * 1e3:.0f} ms ({ref / (few * args.dests) * 1e6:.2f} us per dest)"
    )
    try:
        from pyroute2.netlink.generic.ipvs import ipvsmsg
    except ImportError:
        return
    msgs = [m for _, d in dumps[:few] for m in split(d)[:-1]]

    def pyroute2_parse() -> None:  # decode and read every field, as building a Dest needs
        for m in msgs:
            x = ipvsmsg(m)
            x.decode()
            dest = x.get_attr("IPVS_CMD_ATTR_DEST")
            fields = dict(dest["attrs"])
            fields["stats"] = dict(dest.get_attr("IPVS_DEST_ATTR_STATS64")["attrs"])

    _, t = timed(pyroute2_parse, gc_paused=True)
    print(
        f"for comparison, pyroute2's generic parser (decode + read all fields) on {len(msgs)} dest messages: "
        f"{t / len(msgs) * 1e6:.0f} us per dest"
    )


def split(data: bytes) -> list[bytes]:
    out = []
    off = 0
    while off < len(data):
        n = int.from_bytes(data[off : off + 4], sys.byteorder)
        out.append(data[off : off + n])
        off += (n + 3) & ~3
    return out


if __name__ == "__main__":
    main()
