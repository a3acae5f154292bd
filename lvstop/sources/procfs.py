"""The unprivileged fallback: IPVS state as /proc/net/ip_vs* and /proc/sys/net/ipv4/vs print it.

Pure parsers (text in, model out) plus a thin ProcSource that reads the files. /proc lacks much of
what netlink gives (per-service and per-dest counters and rates, persistent-connection counts,
thresholds, tunnel settings, scheduler flags, sync daemons, timeouts): those stay None/absent and
the snapshot carries one UNAVAILABLE issue saying so.

Formats follow the kernel's seq_file code (net/netfilter/ipvs/ip_vs_ctl.c, ip_vs_conn.c):
- ip_vs: `%s  %08X:%04X %s %s` (IPv6 `[%pI6]:%04X`, fwmark `FWM  %08X %s %s`), then
  `persistent %d %08X` where the timeout is in jiffies (seconds * HZ) and the IPv4 mask is printed
  with ntohl(); for IPv6 services the "mask" is the prefix length, also passed through ntohl().
- ip_vs_conn(_sync): `%-3s %08X %04X %08X %04X %s %04X %-11s ...`, IPv6 printed uncompressed by
  %pI6, the dest address in its own family.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import socket
import time
import zlib
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from ipaddress import IPv6Address
from types import MappingProxyType
from typing import IO, Any

import numpy as np

from lvstop.errors import ParseError, SourceError
from lvstop.model import (
    AF_INET,
    AF_INET6,
    SVC_F_HASHED,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    Array,
    ConnEntry,
    Counters,
    DestTable,
    FwdMethod,
    Issue,
    IssueKind,
    Protocol,
    Rates,
    Service,
    ServiceKey,
    ServiceRows,
    Snapshot,
    Table,
    address_bytes,
)

IP_VS = "/proc/net/ip_vs"
IP_VS_STATS = "/proc/net/ip_vs_stats"
IP_VS_CONN = "/proc/net/ip_vs_conn"
IP_VS_CONN_SYNC = "/proc/net/ip_vs_conn_sync"

UNAVAILABLE_MESSAGE = (
    "/proc gives no per-service or per-dest counters or rates, persistent-connection counts, "
    "thresholds, tunnel settings, scheduler flags, sync daemons or timeouts "
    "(netlink gives them and needs CAP_NET_ADMIN)"
)

PROTOCOLS = {"TCP": Protocol.TCP, "UDP": Protocol.UDP, "SCTP": Protocol.SCTP}
# ip_vs_proto_name(0): persistence templates of fwmark services carry protocol 0.
CONN_PROTOCOLS = {**PROTOCOLS, "IP": Protocol.NONE}
FWD_METHODS = {m.label: m for m in FwdMethod}
CONN_ORIGINS = frozenset(("LOCAL", "SYNC"))  # the Origin column of ip_vs_conn_sync

_VERSION_RE = re.compile(r"IP Virtual Server version (\d+\.\d+\.\d+) \(size=(\d+)\)")
_HEX_RE = re.compile(r"[0-9A-Fa-f]+")
_INT_RE = re.compile(r"-?[0-9]+")
_HZ_RE = re.compile(rb"^CONFIG_HZ=(\d+)$", re.MULTILINE)

# Headers of ip_vs_conn (with PEName PEData since 2.6.37, without before) and ip_vs_conn_sync.
_CONN_HEAD = ("Pro", "FromIP", "FPrt", "ToIP", "TPrt", "DestIP", "DPrt", "State")
CONN_HEADER_PE = (*_CONN_HEAD, "Expires", "PEName", "PEData")
CONN_HEADER_OLD = (*_CONN_HEAD, "Expires")
CONN_HEADER_SYNC = (*_CONN_HEAD, "Origin", "Expires")


# ---------------------------------------------------------------- field decoders


def parse_hex(text: str, digits: int | None = None) -> int:
    """An unsigned hex field; `digits` when the kernel prints a fixed width. Raises ValueError."""
    if not _HEX_RE.fullmatch(text) or (digits is not None and len(text) != digits):
        raise ValueError(f"bad hex field {text!r}")
    return int(text, 16)


def parse_addr(text: str) -> tuple[int, str]:
    """(family, canonical text) of an address as /proc prints it: `%08X` or uncompressed `%pI6`."""
    if len(text) == 8:
        v = parse_hex(text)
        return AF_INET, f"{v >> 24}.{v >> 16 & 255}.{v >> 8 & 255}.{v & 255}"  # 3x faster than IPv4Address
    if len(text) == 39 and text[4::5] == ":::::::":
        try:
            # inet_ntop writes what str(IPv6Address) writes (RFC 5952), 50x faster, except that it
            # prints IPv4-mapped and -compatible addresses dotted: those go the slow way
            name = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(text.replace(":", "")))
            return AF_INET6, name if "." not in name else str(IPv6Address(name))
        except ValueError:
            pass
    raise ValueError(f"bad address {text!r}")


def parse_hostport(text: str) -> tuple[int, str, int]:
    """`CB00710A:0050` or `[2001:0db8:...:0001]:0050` -> (family, address, port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError(f"bad address:port {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if len(host) != 39:
            raise ValueError(f"bad IPv6 address {host!r}")
    family, address = parse_addr(host)
    return family, address, parse_hex(port, 4)


def _int(text: str) -> int:
    # int() alone would take "+1", "1_000" and non-ASCII digits; ASCII digits need no regex
    if not (text.isdigit() and text.isascii()) and not _INT_RE.fullmatch(text):
        raise ValueError(f"bad number {text!r}")
    return int(text)


# ---------------------------------------------------------------- /proc/net/ip_vs


def parse_version_line(line: str, *, source: str = IP_VS) -> tuple[str, int]:
    """`IP Virtual Server version 1.2.1 (size=4096)` -> ("1.2.1", 4096)."""
    m = _VERSION_RE.fullmatch(line.strip())
    if m is None:
        raise ParseError(
            f"expected 'IP Virtual Server version X.Y.Z (size=N)', got {line!r}", source=source, line=1
        )
    return m.group(1), int(m.group(2))


@dataclass
class _ServiceLine:
    """A service line waiting for its dests (a fwmark service's family is only known from them)."""

    protocol: Protocol
    family: int | None  # None for FWM lines
    address: str
    port: int
    fwmark: int
    scheduler: str
    flags: int
    jiffies: int
    netmask: int
    lineno: int


def _parse_service_line(f: list[str], lineno: int) -> _ServiceLine:
    if len(f) < 3:
        raise ValueError("service line needs protocol, address and scheduler")
    if f[0] == "FWM":
        protocol, family, address, port, fwmark = Protocol.NONE, None, "", 0, parse_hex(f[1])
        if fwmark == 0:
            raise ValueError("fwmark 0")
    elif f[0] in PROTOCOLS:
        protocol, fwmark = PROTOCOLS[f[0]], 0
        family, address, port = parse_hostport(f[1])
    else:
        raise ValueError(f"unknown protocol {f[0]!r}")
    flags, jiffies, netmask = SVC_F_HASHED, 0, 0xFFFFFFFF  # every service /proc lists is hashed
    rest = f[3:]
    if rest[:1] == ["ops"]:
        flags |= SVC_F_ONEPACKET
        rest = rest[1:]
    if rest:
        if len(rest) != 3 or rest[0] != "persistent":
            raise ValueError(f"unexpected flags {' '.join(rest)!r}")
        flags |= SVC_F_PERSISTENT
        jiffies = _int(rest[1])
        netmask = parse_hex(rest[2], 8)
    return _ServiceLine(protocol, family, address, port, fwmark, f[2], flags, jiffies, netmask, lineno)


_DestValues = tuple[int, bytes, int, int, int, int, int]  # family, address bytes, port, fwd, w, a, i


def _parse_dest_line(f: list[str]) -> _DestValues:
    """A dest line the vectorised parse left alone (an odd spacing, a sign, or an error to name)."""
    if len(f) != 6:
        raise ValueError("dest line needs address:port, forward, weight, active and inactive conns")
    family, address, port = parse_hostport(f[1])
    fwd = FWD_METHODS.get(f[2])
    if fwd is None:
        raise ValueError(f"unknown forwarding method {f[2]!r}")
    weight, active, inactive = _int(f[3]), _int(f[4]), _int(f[5])
    if not all(-(1 << 63) <= v < 1 << 63 for v in (weight, active, inactive)):
        raise ValueError("number out of range")  # the kernel prints 32-bit ints
    return family, address_bytes(family, address), port, fwd, weight, active, inactive


def _fwmark_family(family: Array, fwd: Array) -> int:
    # FWM lines do not print the family. Only tunnel dests may differ from the service's family,
    # so the other dests (columns of this service's rows) tell it; with none of those, IPv4 is assumed.
    families = np.unique(family[fwd != FwdMethod.TUNNEL])
    return int(families[0]) if len(families) == 1 else AF_INET


def _v6_prefix(printed: int) -> int:
    # The prefix length went through ntohl(): on a little-endian kernel 64 prints as 40000000.
    if printed <= 128:
        return printed
    swapped = int.from_bytes(printed.to_bytes(4, "big"), "little")
    if not 1 <= swapped <= 128:
        raise ValueError(f"bad IPv6 persistence prefix {printed:08X}")
    return swapped


def _finish_service(s: _ServiceLine, family: int, hz: int | None) -> Service:
    key = ServiceKey.mark(s.fwmark, family) if s.fwmark else ServiceKey(family, s.protocol, s.address, s.port)
    netmask = s.netmask
    if family == AF_INET6:
        netmask = _v6_prefix(netmask) if s.flags & SVC_F_PERSISTENT else 128
    timeout = s.jiffies // hz if hz else 0
    return Service(key, s.scheduler, flags=s.flags, timeout=timeout, netmask=netmask)


# ---------------------------------------------------------------- dest lines, vectorised
# Dest lines as the kernel prints them (`  -> %08X:%04X      %-7s %-6d %-10d %-10d`, IPv6
# `  -> [%pI6]:%04X ...`) are parsed all at once over the file's bytes; any other line (services,
# blank lines, odd spacing, signs, errors) goes through the per-line parser above, in file order.

_WS = np.zeros(256, bool)
_WS[list(b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f")] = True  # what str.split() splits ASCII text on
_HEXVAL = np.full(256, 255, np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEXVAL[_c] = _HEXVAL[bytes([_c]).upper()[0]] = _i
# the labels as little-endian integers of their bytes, and the method each names
_FWD_KEYS = {int.from_bytes(m.label.encode(), "little"): m.value for m in FwdMethod}
_MAX_DIGITS = 18  # below 2**63; longer numbers go the per-line way
# Every array below holds one value per candidate line; each step is one pass over those values
# (a loop over the few characters of a field), never a Python loop over lines.


def _hex(buf: Array, at: Array, digits: int) -> tuple[Array, Array]:
    """(values, all hex) of the `digits` hex characters at each position of `at`."""
    value = np.zeros(len(at), np.uint64)
    bad = np.zeros(len(at), bool)
    for k in range(digits):
        v = _HEXVAL[buf[at + k]]
        bad |= v > 15
        value = (value << np.uint64(4)) | v
    return value, ~bad


def _decimal(buf: Array, start: Array, end: Array) -> tuple[Array, Array]:
    """(values, plain digits) of the unsigned decimal tokens buf[start:end]."""
    length = end - start
    ok = length <= _MAX_DIGITS
    value = np.zeros(len(start), np.int64)
    last = len(buf) - 1
    for k in range(int(length[ok].max(initial=0))):
        inside = k < length
        d = buf[np.minimum(start + k, last)].astype(np.int64) - 48
        ok &= ~inside | ((d >= 0) & (d <= 9))
        value = np.where(inside, value * 10 + d, value)
    return value, ok


def _tokens(buf: Array) -> tuple[Array, Array]:
    """Starts and ends of the runs of non-whitespace in `buf`."""
    ws = buf <= 32
    ctrl = np.flatnonzero(buf < 32)  # newlines, tabs and the rare control character that is no space
    ws[ctrl] = _WS[buf[ctrl]]
    edge = np.flatnonzero(ws[:-1] != ws[1:]) + 1
    head, tail = (
        np.array([0] if not ws[0] else [], np.intp),
        np.array([len(buf)] if not ws[-1] else [], np.intp),
    )
    bounds = np.concatenate((head, edge, tail))
    return bounds[0::2], bounds[1::2]


_CHUNK = 8192  # lines parsed at a time: the temporary arrays of a chunk stay small (~2 MB)


def _fast_dests(buf: Array, starts: Array, ends: Array) -> tuple[Array, dict[str, Array]]:
    """Which of the lines buf[starts:ends] are dest lines in the kernel's own shape (bool), and
    their columns (in line order)."""
    fast = np.zeros(len(starts), bool)
    out: dict[str, Array] = {}
    n = 0
    for first in range(0, max(len(starts), 1), _CHUNK):
        lo, hi = (starts[first], ends[min(first + _CHUNK, len(starts)) - 1]) if len(starts) else (0, 0)
        at = slice(first, first + _CHUNK)
        fast[at], cols = _fast_chunk(buf[lo : hi + 1], starts[at] - lo, ends[at] - lo)
        cols["line"] += first
        m = len(cols["line"])
        for k, v in cols.items():  # filled in place: no second copy of the columns while joining
            if k not in out:
                out[k] = np.empty(len(starts), v.dtype)
            out[k][n : n + m] = v
        n += m
    return fast, {k: v[:n] for k, v in out.items()}


def _fast_chunk(buf: Array, starts: Array, ends: Array) -> tuple[Array, dict[str, Array]]:
    """_fast_dests of the lines of one chunk (`buf` holds them; positions are relative to it)."""
    # "  -> " and an IPv4 (%08X:%04X) or IPv6 ([%pI6]:%04X) address:port, then whitespace: positions
    # are fixed; the lengths checked first keep every position read inside its line
    cand = np.flatnonzero(ends - starts > 18)
    s = starts[cand]
    arrow = np.ones(len(s), bool)
    for i, c in enumerate(b"  -> "):
        arrow &= buf[s + i] == c
    bracket = buf[s + 5] == ord("[")
    keep = arrow & (~bracket | (ends[cand] - s > 51))
    cand, s, v6 = cand[keep], s[keep], bracket[keep]
    a4, ok = _hex(buf, s + 5, 8)
    ok &= buf[s + 13] == ord(":")
    six = np.flatnonzero(v6)
    s6 = s[six]
    a6 = np.zeros((len(six), 16), np.uint8)
    ok6 = (buf[s6 + 45] == ord("]")) & (buf[s6 + 46] == ord(":"))
    for g in range(8):  # the groups of %pI6: four hex digits, then ":" (no colon after the last)
        word, good = _hex(buf, s6 + 6 + 5 * g, 4)
        ok6 &= good & ((buf[s6 + 10 + 5 * g] == ord(":")) if g < 7 else True)
        a6[:, 2 * g] = word >> np.uint64(8)
        a6[:, 2 * g + 1] = word & np.uint64(255)
    ok[six] = ok6
    port_at = s + 14
    port_at[six] += 33
    port, good = _hex(buf, port_at, 4)
    ok &= good & _WS[buf[port_at + 4]]
    # the other four fields: the tokens between the address and the end of the line
    tok_start, tok_end = _tokens(buf)
    t = np.searchsorted(tok_start, port_at + 4)  # the first token after the address
    e = ends[cand]
    last = len(tok_start) - 1
    ok &= (t + 3 <= last) & (tok_start[np.minimum(t + 3, last)] < e)
    ok &= (t + 4 > last) | (tok_start[np.minimum(t + 4, last)] >= e)
    t = np.where(ok, t, 0)
    # the forwarding method: one of the labels, exactly (read as the integer of its bytes)
    fs, flen = tok_start[t], tok_end[t] - tok_start[t]
    key = np.zeros(len(s), np.uint64)
    for j in range(6):
        inside = j < flen
        byte = np.where(inside, buf[np.minimum(fs + j, len(buf) - 1)], 0).astype(np.uint64)
        key |= byte << np.uint64(8 * j)
    fwd = np.full(len(s), 255, np.uint8)
    for label, m in _FWD_KEYS.items():
        fwd[key == label] = m
    ok &= (fwd != 255) & (flen <= 6)
    numbers = []
    for j in (1, 2, 3):
        value, good = _decimal(buf, tok_start[t + j], tok_end[t + j])
        ok &= good
        numbers.append(value)
    addr = np.zeros((len(s), 16), np.uint8)
    addr[:, :4] = a4.astype(">u4").view(np.uint8).reshape(-1, 4)
    addr[six] = a6
    fast = np.zeros(len(starts), bool)
    fast[cand[ok]] = True
    columns: dict[str, Array] = {
        "line": cand[ok],
        "family": np.where(v6[ok], AF_INET6, AF_INET).astype(np.uint16),
        "addr": addr[ok].view("V16").reshape(-1),
        "port": port[ok].astype(np.uint16),
        "fwd": fwd[ok],
        "weight": numbers[0][ok],
        "active": numbers[1][ok],
        "inactive": numbers[2][ok],
    }
    return fast, columns


def _line_bounds(buf: Array) -> tuple[Array, Array]:
    """Starts and ends of the "\\n"-separated lines (a last line without its newline counts)."""
    step = 1 << 20  # a megabyte at a time: no temporary as large as the file
    width = np.int32 if len(buf) < 1 << 31 else np.int64  # positions: half the memory of int64
    nl = [(np.flatnonzero(buf[i : i + step] == 10) + i).astype(width) for i in range(0, len(buf), step)]
    if buf[-1] != 10:
        nl.append(np.array([len(buf)], width))
    ends = np.concatenate(nl)
    return np.concatenate((np.zeros(1, width), ends[:-1] + 1)), ends


def parse_ip_vs_table(text: str | bytes, *, hz: int | None = None, source: str = IP_VS) -> Table:
    """Services and dests of /proc/net/ip_vs, in the kernel's order: the services as rows, the dests
    as columns (model.Table; what /proc cannot see is -1 / absent there).

    `hz` is the kernel's CONFIG_HZ: the persistence timeout is printed in jiffies. Without it the
    timeout of persistent services is left 0 (the caller says why in an Issue).
    """
    data = text.encode() if isinstance(text, str) else text
    buf = np.frombuffer(data, np.uint8)
    starts, ends = _line_bounds(buf) if len(buf) else (np.zeros(0, np.intp), np.zeros(0, np.intp))

    def line(j: int) -> str:
        return data[starts[j] : ends[j]].decode()

    if not len(starts) or starts[0] == ends[0]:
        raise ParseError("empty file", source=source, line=1)
    parse_version_line(line(0), source=source)
    for j, head in ((1, "Prot LocalAddress:Port"), (2, "-> RemoteAddress:Port")):
        if not (line(j) if j < len(starts) else "").strip().startswith(head):
            raise ParseError(f"expected a header line starting {head!r}", source=source, line=j + 1)
    fast, cols = _fast_dests(buf, starts[3:], ends[3:])
    first_fast = int(cols["line"][0]) + 3 if len(cols["line"]) else len(starts)
    pending: list[_ServiceLine] = []
    service_lines: list[int] = []
    slow: list[tuple[int, _DestValues]] = []  # (line index, values) of dests parsed line by line
    for j in (np.flatnonzero(~fast) + 3).tolist():
        if not pending and first_fast < j:
            raise ParseError("dest line before any service line", source=source, line=first_fast + 1)
        f = line(j).split()
        if not f:
            continue
        try:
            if f[0] != "->":
                pending.append(_parse_service_line(f, j + 1))
                service_lines.append(j)
            elif pending:
                slow.append((j, _parse_dest_line(f)))
            else:
                raise ValueError("dest line before any service line")
        except ValueError as e:
            raise ParseError(str(e), source=source, line=j + 1) from None
    if not pending and first_fast < len(starts):
        raise ParseError("dest line before any service line", source=source, line=first_fast + 1)
    dests = _dest_table(cols, slow, np.array(service_lines, np.intp) - 3)
    at = np.searchsorted(dests.service, np.arange(len(pending) + 1))
    services: list[Service] = []
    for i, s in enumerate(pending):
        try:
            rows = slice(at[i], at[i + 1])
            family = s.family if s.family is not None else _fwmark_family(dests.family[rows], dests.fwd[rows])
            services.append(_finish_service(s, family, hz))
        except ValueError as e:
            raise ParseError(str(e), source=source, line=s.lineno) from None
    return Table.build(services, dests)


def _dest_table(
    cols: dict[str, Array], slow: list[tuple[int, _DestValues]], service_lines: Array
) -> DestTable:
    """The dests of both parses in line order, each with the index of the service line above it."""
    if slow:
        lines, values = zip(*slow, strict=True)
        family, addr, port, fwd, weight, active, inactive = zip(*values, strict=True)
        extra: dict[str, Array] = {
            "line": np.array(lines, np.intp) - 3,
            "family": np.array(family, np.uint16),
            "addr": np.array(addr, "V16"),
            "port": np.array(port, np.uint16),
            "fwd": np.array(fwd, np.uint8),
            "weight": np.array(weight, np.int64),
            "active": np.array(active, np.int64),
            "inactive": np.array(inactive, np.int64),
        }
        order = np.argsort(np.concatenate((cols["line"], extra["line"])), kind="stable")
        cols = {k: np.concatenate((v, extra[k]))[order] for k, v in cols.items()}
    n = len(cols["line"])
    # what /proc cannot see: constant, read-only columns that take no memory
    none = np.broadcast_to(np.int64(-1), (n,))
    absent = np.broadcast_to(False, (n,))
    zeros = np.broadcast_to(np.uint64(0), (n, 5))
    return DestTable(
        service=np.searchsorted(service_lines, cols["line"], "right") - 1,
        family=cols["family"],
        addr=cols["addr"],
        port=cols["port"],
        fwd=cols["fwd"],
        weight=cols["weight"],
        u_threshold=none,
        l_threshold=none,
        active=cols["active"],
        inactive=cols["inactive"],
        persist=none,
        tun_type=none,
        tun_port=none,
        tun_flags=none,
        counters=zeros,
        has_counters=absent,
        rates=zeros,
        has_rates=absent,
        instant=np.broadcast_to(0.0, (n, 5)),
        has_instant=absent,
    )


def parse_ip_vs(text: str | bytes, *, hz: int | None = None, source: str = IP_VS) -> tuple[Service, ...]:
    """parse_ip_vs_table as rows: each service with its dests."""
    return tuple(ServiceRows(parse_ip_vs_table(text, hz=hz, source=source)))


# ---------------------------------------------------------------- /proc/net/ip_vs_stats


def parse_ip_vs_stats(text: str, *, source: str = IP_VS_STATS) -> tuple[Counters, Rates]:
    """Totals (hex) and the kernel's rates (hex, per second; bytes/s) of /proc/net/ip_vs_stats."""
    lines = text.splitlines()
    expect = {1: "Total", 2: "Conns", 5: "Conns/s"}
    for lineno, word in expect.items():
        if len(lines) < lineno or not lines[lineno - 1].split()[:1] == [word]:
            raise ParseError(f"expected a header line starting {word!r}", source=source, line=lineno)
    values: list[list[int]] = []
    for lineno in (3, 6):
        f = lines[lineno - 1].split() if len(lines) >= lineno else []
        try:
            if len(f) != 5:
                raise ValueError(f"expected 5 hex numbers, got {len(f)} fields")
            row = [parse_hex(v) for v in f]
            if max(row) >= 1 << 64:  # the kernel prints u64 values
                raise ValueError(f"value {max(row):X} does not fit in 64 bits")
            values.append(row)
        except ValueError as e:
            raise ParseError(str(e), source=source, line=lineno) from None
    return Counters(*values[0]), Rates(*(float(v) for v in values[1]))


# ---------------------------------------------------------------- /proc/net/ip_vs_conn(_sync)


def conn_layout(header: str, *, source: str = IP_VS_CONN) -> tuple[bool, frozenset[int]]:
    """(is_sync, allowed field counts) from the header line of ip_vs_conn or ip_vs_conn_sync."""
    f = tuple(header.split())
    if f == CONN_HEADER_PE:
        return False, frozenset((9, 11))  # PEName PEData only when a persistence engine set them
    if f == CONN_HEADER_OLD:
        return False, frozenset((9,))
    if f == CONN_HEADER_SYNC:
        return True, frozenset((10,))
    raise ParseError(f"not an ip_vs_conn header: {header.strip()!r}", source=source, line=1)


def parse_conn_line(line: str, lineno: int, sync: bool, *, source: str = "") -> ConnEntry:
    """One entry of ip_vs_conn (9 fields, or 11 with PEName PEData) or ip_vs_conn_sync (10)."""
    source = source or (IP_VS_CONN_SYNC if sync else IP_VS_CONN)
    f = line.split()
    try:
        if len(f) not in ((10,) if sync else (9, 11)):
            raise ValueError(f"expected {'10' if sync else '9 or 11'} fields, got {len(f)}")
        if f[0] not in CONN_PROTOCOLS:
            raise ValueError(f"unknown protocol {f[0]!r}")
        _, client = parse_addr(f[1])
        _, vaddr = parse_addr(f[3])
        _, daddr = parse_addr(f[5])
        if sync and f[8] not in CONN_ORIGINS:
            raise ValueError(f"unknown origin {f[8]!r}")
        return ConnEntry(
            protocol=f[0],
            client=client,
            client_port=parse_hex(f[2], 4),
            vaddr=vaddr,
            vport=parse_hex(f[4], 4),
            daddr=daddr,
            dport=parse_hex(f[6], 4),
            state=f[7],
            expires=_int(f[9] if sync else f[8]),
            pe_name=f[9] if len(f) == 11 else "",
            pe_data=f[10] if len(f) == 11 else "",
            origin=f[8] if sync else None,
        )
    except ValueError as e:
        raise ParseError(str(e), source=source, line=lineno) from None


# ---------------------------------------------------------------- sysctls


def parse_sysctls(values: Mapping[str, str]) -> dict[str, int]:
    """{name: file text} of net/ipv4/vs -> integers.

    A single integer keeps its name. A vector of integers (sync_threshold "3\\t50") becomes one entry
    per element named `name.0`, `name.1`, ... Anything else (est_cpulist "0-3") is not an int and
    is left out.
    """
    out: dict[str, int] = {}
    for name, text in values.items():
        parts = text.split()
        if not parts or not all(_INT_RE.fullmatch(p) for p in parts):
            continue
        if len(parts) == 1:
            out[name] = int(parts[0])
        else:
            out.update((f"{name}.{i}", int(p)) for i, p in enumerate(parts))
    return out


_CPULIST_RE = re.compile(r"(?:[0-9]+(?:-[0-9]+)?(?:,[0-9]+(?:-[0-9]+)?)*)?")
# Seen on 6.12: with est_cpulist empty the kernel logs "stopping estimator thread", run_estimation still
# reads 1, the counters it reports stop moving and the rates keep their last value until a CPU is listed.
ESTIMATOR_STOPPED = (
    "est_cpulist is empty: the kernel stopped its estimator kthreads (run_estimation still reads 1), "
    "so counters and rates are frozen at their last values"
)


def parse_cpulist(text: str, *, source: str = "est_cpulist") -> str:
    """A kernel CPU list ("0-1", "0,2-3", "" for none) as printed, checked; ParseError otherwise."""
    value = text.strip()
    if not _CPULIST_RE.fullmatch(value):
        raise ParseError(f"not a CPU list: {value!r}", source=source)
    return value


def read_est_cpulist(directory: str, issues: list[Issue]) -> str | None:
    """net.ipv4.vs.est_cpulist under `directory`; None where the kernel has none (before 6.2) or it
    could not be read, which is then added to `issues`."""
    path = os.path.join(directory, "est_cpulist")
    try:
        with open(path, encoding="ascii") as f:
            return parse_cpulist(f.read(), source=path)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        issues.append(Issue(IssueKind.IO, f"{path}: {getattr(e, 'strerror', None) or e}"))
    except ParseError as e:
        issues.append(Issue(IssueKind.MALFORMED, str(e)))
    return None


def estimator_issues(sysctls: Mapping[str, int], est_cpulist: str | None) -> list[Issue]:
    """What the sysctls say about the freshness of counters and rates."""
    if est_cpulist == "" and sysctls.get("run_estimation", 1):
        return [Issue(IssueKind.UNAVAILABLE, ESTIMATOR_STOPPED)]
    return []


def read_sysctls(directory: str) -> dict[str, int]:
    """parse_sysctls over the readable files of `directory` (e.g. /proc/sys/net/ipv4/vs)."""
    texts: dict[str, str] = {}
    for name in sorted(os.listdir(directory)):
        try:
            with open(os.path.join(directory, name), encoding="ascii") as f:
                texts[name] = f.read()
        except (OSError, UnicodeDecodeError):
            continue  # write-only or vanished entries say nothing about traffic
    return parse_sysctls(texts)


# ---------------------------------------------------------------- HZ


def parse_config_hz(config: bytes) -> int | None:
    """CONFIG_HZ from a kernel .config."""
    m = _HZ_RE.search(config)
    return int(m.group(1)) if m else None


def is_live_proc(root: str) -> bool:
    """Whether `root` is the running kernel's /proc or a /proc/PID in it (whose /boot is the host's)."""
    path = os.path.realpath(root)
    return path == "/proc" or (os.path.dirname(path) == "/proc" and os.path.basename(path).isdigit())


def detect_hz(proc_root: str, sys_root: str, boot_dir: str | None) -> int | None:
    """The running kernel's CONFIG_HZ from {proc}/config.gz or {boot}/config-<release>, else None."""
    try:
        with gzip.open(os.path.join(proc_root, "config.gz")) as f:
            hz = parse_config_hz(f.read())
        if hz:
            return hz
    except (OSError, EOFError, zlib.error):  # absent, or not a whole gzip stream
        pass
    if boot_dir is None:
        return None
    try:
        with open(os.path.join(sys_root, "kernel", "osrelease"), encoding="ascii") as f:
            release = f.read().strip()
        with open(os.path.join(boot_dir, f"config-{release}"), "rb") as b:
            return parse_config_hz(b.read())
    except (OSError, UnicodeDecodeError):
        return None


# ---------------------------------------------------------------- the source


def _open(path: str, missing: IssueKind, what: str, mode: str = "r") -> IO[Any]:
    try:
        return open(path, mode, encoding=None if "b" in mode else "ascii")
    except FileNotFoundError:
        raise SourceError(missing, what) from None
    except PermissionError:
        raise SourceError(IssueKind.NO_PERMISSION, f"permission denied reading {path}") from None
    except OSError as e:
        raise SourceError(IssueKind.IO, f"{path}: {e.strerror or e}") from None


def _read(path: str, missing: IssueKind, what: str) -> bytes:
    """The file's bytes, which must be ASCII (then they are its characters)."""
    with _open(path, missing, what, "rb") as f:
        try:
            data: bytes = f.read()
            if not data.isascii():
                data.decode("ascii")  # raises, naming the first other byte
        except (OSError, UnicodeDecodeError) as e:
            raise SourceError(IssueKind.IO, f"{path}: {e}") from None
    return data


def _stream(f: IO[str], path: str) -> Generator[str, None, None]:
    with f:
        try:
            yield from f
        except (OSError, UnicodeDecodeError) as e:
            raise SourceError(IssueKind.IO, f"{path}: {e}") from None


class ConnFile(Iterator[str]):
    """An open ip_vs_conn(_sync): its lines as a text file gives them (ASCII, universal newlines), or,
    for a reader that counts bytes (lvstop.conntable), the same text in blocks of whole lines. A read
    uses one or the other."""

    def __init__(self, f: IO[bytes], path: str) -> None:
        self.path = path
        self._f = f
        self._lines: Generator[str, None, None] | None = None
        self._rest = b""  # read but not handed out: the start of a line

    def __next__(self) -> str:
        if self._lines is None:
            self._lines = _stream(io.TextIOWrapper(self._f, encoding="ascii"), self.path)
        return next(self._lines)

    def block(self, size: int) -> bytes:
        """The next whole lines, about `size` bytes (at least one line), newlines as the lines have them
        (the file's last line may have none); b"" at the end of the file."""
        data = self._rest
        try:
            while True:
                more = self._f.read(size)
                data += more
                cut = data.rfind(b"\n") + 1
                if cut or not more:
                    break
        except OSError as e:
            raise SourceError(IssueKind.IO, f"{self.path}: {e.strerror or e}") from None
        if not more:
            cut = len(data)  # the end of the file: its last line, newline or not
        data, self._rest = data[:cut], data[cut:]
        if not data.isascii():
            try:
                data.decode("ascii")
            except UnicodeDecodeError as e:  # always: names the first other byte
                raise SourceError(IssueKind.IO, f"{self.path}: {e}") from None
        if b"\r" in data:  # never from a kernel: newlines as a text file translates them
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return data

    def close(self) -> None:
        if self._lines is not None:
            self._lines.close()
        self._f.close()


class ProcSource:
    """Reads {root}/net/ip_vs*, and the sysctls under {sys_root}/net/ipv4/vs (sys_root: {root}/sys).

    `hz` overrides the CONFIG_HZ detection (needed to turn the persistence timeout from jiffies
    into seconds); `boot_dir` is where config-<release> is looked for: by default /boot and
    /proc/config.gz for the running kernel's /proc (or a /proc/PID in it, another namespace's view) only:
    a copied or fake root describes another kernel, so nothing outside it is read.
    """

    name = "proc"

    def __init__(
        self,
        root: str = "/proc",
        sys_root: str | None = None,
        *,
        hz: int | None = None,
        boot_dir: str | None = None,
    ) -> None:
        self.root = root
        self.sys_root = sys_root if sys_root is not None else os.path.join(root, "sys")
        live = is_live_proc(root)
        boot = boot_dir if boot_dir is not None else ("/boot" if live else None)
        self._hz = hz if hz is not None else detect_hz("/proc" if live else root, self.sys_root, boot)
        # the length and hash of the last ip_vs bytes, and their table: unchanged bytes are not parsed
        # again (a 64-bit keyed hash, 0.02 us per dest; the bytes themselves would stay alive, 65 per dest)
        self._seen: tuple[int, int] | None = None
        self._table = Table.build((), DestTable.empty())

    def _path(self, name: str) -> str:
        return os.path.join(self.root, "net", name)

    def _director(self) -> str:
        try:
            with open(os.path.join(self.sys_root, "kernel", "hostname"), encoding="utf-8") as f:
                return f.read().strip() or socket.gethostname()
        except OSError:
            return socket.gethostname()

    def read(self) -> Snapshot:
        wall, mono = time.time(), time.monotonic()
        path = self._path("ip_vs")
        data = _read(path, IssueKind.NO_IPVS, f"ip_vs is not loaded (no {path})")
        seen = (len(data), hash(data))
        if seen != self._seen:
            self._table = parse_ip_vs_table(data, hz=self._hz, source=path)
            self._seen = seen
        table = self._table
        version, size = parse_version_line(data[: data.find(b"\n") % (len(data) + 1)].decode(), source=path)
        issues = [Issue(IssueKind.UNAVAILABLE, UNAVAILABLE_MESSAGE)]
        if self._hz is None and any(s.persistent for s in table.services):
            issues.append(
                Issue(
                    IssueKind.UNAVAILABLE,
                    "persistence timeouts unknown: /proc prints them in jiffies and the "
                    "kernel's CONFIG_HZ was not found (/proc/config.gz, /boot/config-*)",
                )
            )
        totals: Counters | None = None
        total_rates: Rates | None = None
        stats_path = self._path("ip_vs_stats")
        try:
            totals, total_rates = parse_ip_vs_stats(
                _read(stats_path, IssueKind.IO, f"no {stats_path}").decode(), source=stats_path
            )
        except SourceError as e:
            issues.append(Issue(e.kind, str(e)))
        except ParseError as e:
            issues.append(Issue(IssueKind.MALFORMED, str(e)))
        sysctl_dir = os.path.join(self.sys_root, "net", "ipv4", "vs")
        try:
            sysctls = read_sysctls(sysctl_dir)
        except OSError as e:
            sysctls = {}
            issues.append(Issue(IssueKind.IO, f"cannot list {sysctl_dir}: {e.strerror or e}"))
        est_cpulist = read_est_cpulist(sysctl_dir, issues)
        issues += estimator_issues(sysctls, est_cpulist)
        return Snapshot(
            source=self.name,
            director=self._director(),
            wall_time=wall,
            mono_time=mono,
            services=ServiceRows(table),
            version=version,
            conn_tab_size=size,
            totals=totals,
            total_rates=total_rates,
            daemons=None,
            sysctls=MappingProxyType(sysctls),
            issues=tuple(issues),
            poll_duration=time.monotonic() - mono,
            est_cpulist=est_cpulist,
        )

    def conn_lines(self, sync: bool = False) -> Iterator[str]:
        """Lines (newline included) of ip_vs_conn or ip_vs_conn_sync, header first, streamed.

        Opens the file now so a missing file raises here: SourceError(UNAVAILABLE) when only the
        _sync file is missing, NO_IPVS when ip_vs is not loaded.
        """
        path = self._path("ip_vs_conn_sync" if sync else "ip_vs_conn")
        missing = IssueKind.NO_IPVS
        if sync and os.path.exists(self._path("ip_vs_conn")):
            missing = IssueKind.UNAVAILABLE
        f = _open(
            path,
            missing,
            f"no {path}" if missing is IssueKind.UNAVAILABLE else f"ip_vs is not loaded (no {path})",
            "rb",
        )
        return ConnFile(f, path)

    def close(self) -> None:
        """Nothing stays open between reads."""
