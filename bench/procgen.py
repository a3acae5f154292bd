"""Generated /proc/net/ip_vs* in the formats a 6.1 kernel prints (see kernel-lab/sample-6.1), at any scale.

    .venv/bin/python bench/procgen.py DIR [--services S] [--dests D] [--conns N] [--seed K]

writes DIR/net/ip_vs_stats (the 6.1 sample's), DIR/net/ip_vs (S services x D dests: TCP and UDP over
IPv4, every 10th service IPv6, every 25th a fwmark service, every 7th persistent) and DIR/net/ip_vs_conn
(N entries over those services: TCP states weighted like a busy web director, 2% persistence templates,
fwmark templates with protocol IP and the mark as vaddr, a few entries with PEName/PEData; clients from a
pool of 20,000).
Addresses are in the documentation ranges (IPv4 clients in 198.18.0.0/15, the benchmarking range).
The text is what the kernel's seq_file code prints: `%08X`, uncompressed `%pI6`, `%-3s` protocols,
`%-11s` states, `%7lu` expiry.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CONN_HEADER = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"
TCP_STATES = (
    ["ESTABLISHED"] * 50
    + ["TIME_WAIT"] * 30
    + ["FIN_WAIT"] * 8
    + ["SYN_RECV"] * 4
    + ["CLOSE_WAIT"] * 4
    + ["LAST_ACK"] * 2
    + ["CLOSE"] * 2
)
V6_NET = 0x20010DB8 << 96
# /proc/net/ip_vs_stats as the 6.1 sample prints it (totals and rates in hex)
IP_VS_STATS = (
    "   Total Incoming Outgoing         Incoming         Outgoing\n"
    "   Conns  Packets  Packets            Bytes            Bytes\n"
    "      7C      2A6      296             B0DA             D844\n"
    "\n"
    " Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n"
    "       9       30       2E              C65              F25\n"
)


def v6(n: int) -> str:
    """%pI6 of the integer n: eight groups of four hex digits."""
    h = f"{n:032x}"
    return ":".join(h[i : i + 4] for i in range(0, 32, 4))


@dataclass(frozen=True)
class GenService:
    proto: str  # TCP, UDP or FWM
    ipv6: bool
    vaddr: int  # the address, or the fwmark for FWM
    vport: int
    dests: tuple[int, ...]  # dest addresses (same family as the service)
    dport: int
    persistent: bool


def services(n_services: int, n_dests: int) -> list[GenService]:
    out = []
    for i in range(n_services):
        ipv6 = i % 10 == 9
        fwm = i % 25 == 24
        proto = "FWM" if fwm else ("UDP" if i % 4 == 3 else "TCP")
        # 203.0.113.0/24 with ports 80-1079: (address, port) pairs repeat only after 32,000 services
        vaddr = i + 1 if fwm else (V6_NET | 0x113 << 16 | i if ipv6 else 0xCB007100 + i % 256)
        # 198.51.100.0/24 and 192.0.2.0/24 give 512 dest addresses; ports tell the rest apart
        dests = tuple(
            (V6_NET | 0x2 << 16 | (i * n_dests + j))
            if ipv6
            else (0xC0000200 if j % 2 else 0xC6336400) + j // 2 % 256
            for j in range(n_dests)
        )
        out.append(GenService(proto, ipv6, vaddr, 80 + i % 1000, dests, 8000 + i // 100, i % 7 == 6))
    return out


def ip_vs_text(svcs: list[GenService]) -> Iterator[str]:
    yield "IP Virtual Server version 1.2.1 (size=4096)\n"
    yield "Prot LocalAddress:Port Scheduler Flags\n"
    yield "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"
    for k, s in enumerate(svcs):
        flags = " persistent 30000 FFFFFF00" if s.persistent and not s.ipv6 else ""
        flags = " persistent 30000 00000080" if s.persistent and s.ipv6 else flags
        if s.proto == "FWM":
            head = f"FWM  {s.vaddr:08X} wlc{flags}"
        elif s.ipv6:
            head = f"{s.proto}  [{v6(s.vaddr)}]:{s.vport:04X} wlc{flags}"
        else:
            head = f"{s.proto}  {s.vaddr:08X}:{s.vport:04X} wlc{flags}"
        yield head + " \n"
        for j, d in enumerate(s.dests):
            addr = f"[{v6(d)}]" if s.ipv6 else f"{d:08X}"
            fwd = "Masq" if j % 5 else "Route"
            port = (s.dport + j // 512) & 0xFFFF
            conns = f"{(k * j) % 50:<10} {(k + j) % 200:<10}"
            yield f"  -> {addr}:{port:04X}      {fwd:<7} {1 + j % 3:<6} {conns}\n"


def ip_vs_conn_text(svcs: list[GenService], n_conns: int, seed: int = 7) -> Iterator[str]:
    rnd = random.Random(seed)
    yield CONN_HEADER
    for _ in range(n_conns):
        s = svcs[rnd.randrange(len(svcs))]
        j = rnd.randrange(len(s.dests))
        c = rnd.randrange(20_000)
        client = v6(V6_NET | 0xC << 16 | c) if s.ipv6 else f"{0xC6120000 + c:08X}"  # 198.18.0.0/15
        daddr = v6(s.dests[j]) if s.ipv6 else f"{s.dests[j]:08X}"
        dport = (s.dport + j // 512) & 0xFFFF
        template = rnd.random() < 0.02
        if s.proto == "FWM":
            # packets show their own address and port; templates carry protocol IP and the mark
            vport = 80 + c % 3
            vaddr = v6(V6_NET | 0x113 << 16 | 0xFF00 | c % 4) if s.ipv6 else f"{0xCB0071F0 + c % 4:08X}"
            if template:
                proto, vaddr, vport, dport = "IP", (v6(s.vaddr << 96) if s.ipv6 else f"{s.vaddr:08X}"), 0, 0
            else:
                proto = "TCP"
        else:
            proto = s.proto
            vaddr = v6(s.vaddr) if s.ipv6 else f"{s.vaddr:08X}"
            vport = s.vport
        if template:
            cport, state = 0, ("NONE" if proto == "IP" else "ASSURED")
        else:
            cport = rnd.randrange(1024, 65536)
            state = "UDP" if proto == "UDP" else rnd.choice(TCP_STATES)
        pe = f" sip call-{c}@198.51.100.7" if proto == "UDP" and c % 97 == 0 else ""
        yield (
            f"{proto:<3} {client} {cport:04X} {vaddr} {vport:04X} {daddr} {dport:04X} {state:<11} "
            f"{rnd.randrange(900):7d}{pe}\n"
        )


def write(root: Path, n_services: int, n_dests: int, n_conns: int, seed: int = 7) -> list[GenService]:
    net = root / "net"
    net.mkdir(parents=True, exist_ok=True)
    svcs = services(n_services, n_dests)
    with open(net / "ip_vs", "w", encoding="ascii") as f:
        f.writelines(ip_vs_text(svcs))
    with open(net / "ip_vs_conn", "w", encoding="ascii") as f:
        f.writelines(ip_vs_conn_text(svcs, n_conns, seed))
    (net / "ip_vs_stats").write_text(IP_VS_STATS)
    return svcs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path)
    ap.add_argument("--services", type=int, default=200)
    ap.add_argument("--dests", type=int, default=10)
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    write(a.dir, a.services, a.dests, a.conns, a.seed)


if __name__ == "__main__":
    main()
