"""An independent reading of ipvsadm's text, and of lvstop's snapshots, into one comparable shape.

Nothing here imports lvstop's parsers: the tier compares lvstop with what ipvsadm prints, so the
oracle must not share code with what it checks. Everything is reduced to plain dicts keyed by
strings ipvsadm itself prints ("TCP  203.0.113.10:80", "FWM  3 IPv6", "192.0.2.11:8080").
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

# ipvsadm -Ln prints the protocol padded to 4 columns and one space: "TCP  x", "SCTP x", "FWM  3"
_SERVICE = re.compile(r"^(TCP|UDP|SCTP|FWM) +(\S+)(?: (IPv6))?(.*)$")
_DEST = re.compile(r"^  -> (\S+)\s+(.*)$")
FWD = ("Masq", "Local", "Tunnel", "Route", "Bypass")  # IP_VS_CONN_F_* 0..4 as ipvsadm names them


def service_name(protocol: str, family: int, address: str, port: int, fwmark: int) -> str:
    """The service as ipvsadm -n prints it (first columns of its line)."""
    if fwmark:
        return f"FWM  {fwmark}" + (" IPv6" if family == 10 else "")
    return f"{protocol:<4} {hostport(family, address, port)}"


def hostport(family: int, address: str, port: int) -> str:
    addr = str(ipaddress.ip_address(address))
    return f"[{addr}]:{port}" if family == 10 else f"{addr}:{port}"


@dataclass
class Listing:
    """One director as the union of ipvsadm's listing modes: services -> fields, dests -> fields."""

    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    dests: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def merge(self, other: Listing) -> None:
        for s, f in other.services.items():
            self.services.setdefault(s, {}).update(f)
        for s, ds in other.dests.items():
            mine = self.dests.setdefault(s, {})
            for d, f in ds.items():
                mine.setdefault(d, {}).update(f)


def _service_words(rest: str) -> dict[str, Any]:
    """`rr (sh-fallback,sh-port) persistent 120 mask 255.255.255.0 pe sip ops` -> fields."""
    words = rest.split()
    out: dict[str, Any] = {
        "scheduler": words[0],
        "sched_flags": (),
        "persistent": None,
        "mask": None,
        "pe": "",
        "ops": False,
    }
    i = 1
    while i < len(words):
        w = words[i]
        if w.startswith("("):
            out["sched_flags"] = tuple(w.strip("()").split(","))
        elif w == "persistent":
            out["persistent"] = int(words[i + 1])
            i += 1
        elif w == "mask":
            out["mask"] = words[i + 1]
            i += 1
        elif w == "pe":
            out["pe"] = words[i + 1]
            i += 1
        elif w == "ops":
            out["ops"] = True
        else:
            raise ValueError(f"unexpected word {w!r} in service flags {rest!r}")
        i += 1
    return out


_NUMBERS = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")
_RATES = ("cps", "inpps", "outpps", "inbps", "outbps")


def parse_list(text: str) -> Listing:
    """Any `ipvsadm -Ln [--stats|--rate|--thresholds|--persistent-conn|--tun-info] [--exact]` output."""
    lines = text.splitlines()
    mode = "plain"
    out = Listing()
    current: str | None = None
    for line in lines:
        if line.startswith("IP Virtual Server version"):
            continue
        if line.startswith("Prot LocalAddress:Port"):
            header = line.split()
            if "Conns" in header:
                mode = "stats"
            elif "CPS" in header:
                mode = "rate"
            elif "Uthreshold" in header:
                mode = "thresholds"
            elif "PersistConn" in header:
                mode = "persistent"
            continue
        if line.startswith("  -> RemoteAddress:Port"):
            if "TunnelInfo" in line:
                mode = "tun"
            continue
        if m := _DEST.match(line):
            assert current is not None, f"dest line before any service: {line!r}"
            w = m.group(2).split()
            dest: dict[str, Any]
            if mode in ("stats", "rate"):
                dest = dict(zip(_NUMBERS if mode == "stats" else _RATES, map(_exact, w), strict=True))
            elif mode == "thresholds":
                dest = dict(
                    zip(("u_threshold", "l_threshold", "active", "inactive"), map(int, w), strict=True)
                )
            elif mode == "persistent":
                dest = dict(zip(("weight", "persist", "active", "inactive"), map(int, w), strict=True))
            elif mode == "tun":
                dest = {
                    "fwd": w[0],
                    "tun_info": w[1],
                    "weight": int(w[2]),
                    "active": int(w[3]),
                    "inactive": int(w[4]),
                }
            else:
                dest = {"fwd": w[0], "weight": int(w[1]), "active": int(w[2]), "inactive": int(w[3])}
            out.dests[current][m.group(1)] = dest
            continue
        if m := _SERVICE.match(line):
            proto, where, v6, rest = m.groups()
            current = f"FWM  {where}" + (" IPv6" if v6 else "") if proto == "FWM" else f"{proto:<4} {where}"
            out.dests.setdefault(current, {})
            if mode in ("stats", "rate"):
                w = rest.split()
                out.services[current] = dict(
                    zip(_NUMBERS if mode == "stats" else _RATES, map(_exact, w), strict=True)
                )
            else:
                out.services[current] = _service_words(rest)
            continue
        if line.strip():
            raise ValueError(f"unparsed ipvsadm line: {line!r}")
    return out


def _exact(word: str) -> int:
    if not word.isdigit():
        raise ValueError(f"{word!r} is not an exact number (was --exact given?)")
    return int(word)


def parse_timeout(text: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"Timeout \(tcp tcpfin udp\): (\d+) (\d+) (\d+)\n?", text)
    assert m, f"unexpected --timeout output {text!r}"
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def parse_daemons(text: str) -> list[dict[str, Any]]:
    """`master sync daemon (mcast=sync0, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)`."""
    out = []
    for line in text.splitlines():
        m = re.fullmatch(r"(master|backup) sync daemon \((.*)\)", line)
        assert m, f"unexpected --daemon line {line!r}"
        fields: dict[str, Any] = {"state": m.group(1)}
        for kv in m.group(2).split(", "):
            k, v = kv.split("=", 1)
            fields[k] = int(v) if v.isdigit() else v
        out.append(fields)
    return out


@dataclass(frozen=True)
class Conn:
    """One `ipvsadm -Lnc` line."""

    protocol: str
    expire: str
    state: str
    source: str
    virtual: str
    destination: str


def parse_conns(text: str) -> list[Conn]:
    lines = text.splitlines()
    assert lines[:2] == [
        "IPVS connection entries",
        "pro expire state       source             virtual            destination",
    ], lines[:2]
    return [Conn(*line.split()) for line in lines[2:]]


def _proc_addr(text: str) -> tuple[int, str, int]:
    """`CB00710A:0050` or `[2001:0db8:...]:0050` -> (family, address, port)."""
    host, _, port = text.rpartition(":")
    if host.startswith("["):
        return 10, str(ipaddress.IPv6Address(host.strip("[]"))), int(port, 16)
    return 2, str(ipaddress.IPv4Address(int(host, 16))), int(port, 16)


def proc_service_names(text: str) -> set[str]:
    """The services /proc/net/ip_vs actually printed, named as ipvsadm names them. /proc does not
    print an fwmark service's family: like the kernel's own dests, we take it from its first dest."""
    names: set[str] = set()
    pending: tuple[str, int] | None = None  # an fwmark service waiting for a dest to tell its family

    def flush(family: int) -> None:
        nonlocal pending
        if pending is not None:
            names.add(service_name("", family, "", 0, pending[1]))
            pending = None

    for line in text.splitlines()[3:]:
        w = line.split()
        if w[0] == "->":
            flush(_proc_addr(w[1])[0])
            continue
        flush(2)
        if w[0] == "FWM":
            pending = (w[0], int(w[1], 16))
        else:
            family, addr, port = _proc_addr(w[1])
            names.add(service_name(w[0], family, addr, port, 0))
    flush(2)
    return names


# ----------------------------------------------------------------- lvstop's snapshot, same shape


def _mask(family: int, netmask: int) -> str | None:
    if family == 10:
        return None if netmask == 128 else str(netmask)
    return None if netmask == 0xFFFFFFFF else str(ipaddress.IPv4Address(netmask))


def _sched_flags(scheduler: str, flags: int) -> tuple[str, ...]:
    if scheduler in ("sh", "mh"):
        names = [(0x08, f"{scheduler}-fallback"), (0x10, f"{scheduler}-port")]
    else:
        names = [(0x08, "flag-1"), (0x10, "flag-2"), (0x20, "flag-3")]
    return tuple(n for bit, n in names if flags & bit)


def _tun_info(fwd: str, tun_type: int, port: int, flags: int) -> str:
    if fwd != "Tunnel":
        return "n/a"
    kind = ("ipip", "gue", "gre")[tun_type]
    if kind == "ipip":
        return kind
    # as ipvsadm 1.31 printed them on 6.1: --tun-nocsum (0) -c, --tun-csum (1) +c, --tun-remcsum (2) r+c
    csum = {0: "-c", 1: "+c", 2: "r+c"}.get(flags, f"?{flags}")
    return f"{kind}:{port}:{csum}" if kind == "gue" else f"{kind}:{csum}"


def snapshot_listing(snap: Any) -> Listing:
    """lvstop's Snapshot as the fields ipvsadm shows. Unknown values (None) stay None."""
    out = Listing()
    for s in snap.services:
        k = s.key
        name = service_name(k.protocol.name, k.family, k.address, k.port, k.fwmark)
        persistent = bool(s.flags & 0x1)
        fields: dict[str, Any] = {
            "scheduler": s.scheduler,
            "sched_flags": _sched_flags(s.scheduler, s.flags),
            "persistent": s.timeout if persistent else None,
            "mask": _mask(k.family, s.netmask) if persistent else None,
            "pe": s.pe_name,
            "ops": bool(s.flags & 0x4),
        }
        fields.update(_numbers(s.counters, s.rates))
        out.services[name] = fields
        dests = out.dests.setdefault(name, {})
        for d in s.dests:
            fwd = FWD[int(d.fwd)]
            df: dict[str, Any] = {
                "fwd": fwd,
                "weight": d.weight,
                "active": d.active_conns,
                "inactive": d.inactive_conns,
                "u_threshold": d.u_threshold,
                "l_threshold": d.l_threshold,
                "persist": d.persist_conns,
                "tun_info": None
                if d.tun_type is None
                else _tun_info(fwd, int(d.tun_type), d.tun_port, d.tun_flags),
            }
            df.update(_numbers(d.counters, d.rates))
            dests[hostport(d.family, d.address, d.port)] = df
    return out


def _numbers(counters: Any, rates: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for names, obj in ((_NUMBERS, counters), (_RATES, rates)):
        for n in names:
            v = getattr(obj, n) if obj is not None else None
            out[n] = int(v) if isinstance(v, float) and v.is_integer() else v
    return out


def differences(expected: Listing, got: Listing, *, fields: set[str] | None = None) -> list[str]:
    """Every field where `got` differs from `expected` (restricted to `fields` when given)."""
    diffs: list[str] = []
    for name in sorted(set(expected.services) | set(got.services)):
        if name not in got.services:
            diffs.append(f"{name}: missing in lvstop")
            continue
        if name not in expected.services:
            diffs.append(f"{name}: extra in lvstop (ipvsadm does not list it)")
            continue
        diffs += _field_diffs(name, expected.services[name], got.services[name], fields)
        exp_d, got_d = expected.dests.get(name, {}), got.dests.get(name, {})
        for d in sorted(set(exp_d) | set(got_d)):
            if d not in got_d or d not in exp_d:
                diffs.append(f"{name} -> {d}: {'missing in lvstop' if d not in got_d else 'extra in lvstop'}")
                continue
            diffs += _field_diffs(f"{name} -> {d}", exp_d[d], got_d[d], fields)
    return diffs


def _field_diffs(where: str, exp: dict[str, Any], got: dict[str, Any], fields: set[str] | None) -> list[str]:
    return [
        f"{where}: {k} ipvsadm={v!r} lvstop={got.get(k, '<absent>')!r}"
        for k, v in exp.items()
        if (fields is None or k in fields) and got.get(k, "<absent>") != v
    ]
