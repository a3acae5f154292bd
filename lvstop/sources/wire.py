"""IPVS generic-netlink wire format: kernel replies -> model, model -> requests. Pure, no I/O.

Layout from include/uapi/linux/ip_vs.h and net/netfilter/ipvs/ip_vs_ctl.c (ip_vs_genl_fill_service,
_fill_dest, _fill_daemon, _get_cmd). Attributes are host order except ports and the tunnel port
(be16), the IPv4 netmask and IPv4 multicast group (be32); addresses are a 16-byte union nf_inet_addr
(IPv4 in the first 4 bytes). The IPv6 "netmask" is a prefix length, host order.

Decoding is built for big directors: the kernel writes every dest message with the same attribute
layout, so the first message of each length is walked attribute by attribute (the reference path) and
its layout compiled (_Layout): later messages are checked header by header against it, a block at a
time, and their values read with one precompiled struct; a message whose headers differ goes back to
the reference path. Both paths feed the same builders, so they cannot disagree on meaning.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final, TypeVar

import numpy as np

from lvstop.errors import ParseError, SourceError
from lvstop.model import (
    AF_INET,
    AF_INET6,
    Array,
    Counters,
    Daemon,
    DaemonState,
    Dest,
    DestTable,
    FwdMethod,
    IssueKind,
    Protocol,
    Rates,
    Service,
    ServiceKey,
    Timeouts,
    TunType,
)

# --- netlink (include/uapi/linux/netlink.h) ---
NLMSG_NOOP: Final = 1
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
NLMSG_OVERRUN: Final = 4
NLM_F_REQUEST: Final = 0x1
NLM_F_MULTI: Final = 0x2
NLM_F_ACK: Final = 0x4
NLM_F_DUMP: Final = 0x300
NLA_TYPE_MASK: Final = 0x3FFF  # strips NLA_F_NESTED and NLA_F_NET_BYTEORDER

# --- IPVS generic netlink family (include/uapi/linux/ip_vs.h) ---
IPVS_GENL_NAME: Final = "IPVS"
IPVS_GENL_VERSION: Final = 1

CMD_NEW_SERVICE: Final = 1
CMD_SET_SERVICE: Final = 2
CMD_DEL_SERVICE: Final = 3
CMD_GET_SERVICE: Final = 4
CMD_NEW_DEST: Final = 5
CMD_SET_DEST: Final = 6
CMD_DEL_DEST: Final = 7
CMD_GET_DEST: Final = 8
CMD_NEW_DAEMON: Final = 9
CMD_DEL_DAEMON: Final = 10
CMD_GET_DAEMON: Final = 11
CMD_SET_CONFIG: Final = 12
CMD_GET_CONFIG: Final = 13
CMD_SET_INFO: Final = 14
CMD_GET_INFO: Final = 15
CMD_ZERO: Final = 16
CMD_FLUSH: Final = 17

CMD_NAMES: Final = {
    CMD_NEW_SERVICE: "NEW_SERVICE",
    CMD_SET_SERVICE: "SET_SERVICE",
    CMD_DEL_SERVICE: "DEL_SERVICE",
    CMD_GET_SERVICE: "GET_SERVICE",
    CMD_NEW_DEST: "NEW_DEST",
    CMD_SET_DEST: "SET_DEST",
    CMD_DEL_DEST: "DEL_DEST",
    CMD_GET_DEST: "GET_DEST",
    CMD_NEW_DAEMON: "NEW_DAEMON",
    CMD_DEL_DAEMON: "DEL_DAEMON",
    CMD_GET_DAEMON: "GET_DAEMON",
    CMD_SET_CONFIG: "SET_CONFIG",
    CMD_GET_CONFIG: "GET_CONFIG",
    CMD_SET_INFO: "SET_INFO",
    CMD_GET_INFO: "GET_INFO",
    CMD_ZERO: "ZERO",
    CMD_FLUSH: "FLUSH",
}

CMD_ATTR_SERVICE: Final = 1
CMD_ATTR_DEST: Final = 2
CMD_ATTR_DAEMON: Final = 3
CMD_ATTR_TIMEOUT_TCP: Final = 4
CMD_ATTR_TIMEOUT_TCP_FIN: Final = 5
CMD_ATTR_TIMEOUT_UDP: Final = 6

SVC_ATTR_AF: Final = 1
SVC_ATTR_PROTOCOL: Final = 2
SVC_ATTR_ADDR: Final = 3
SVC_ATTR_PORT: Final = 4
SVC_ATTR_FWMARK: Final = 5
SVC_ATTR_SCHED_NAME: Final = 6
SVC_ATTR_FLAGS: Final = 7
SVC_ATTR_TIMEOUT: Final = 8
SVC_ATTR_NETMASK: Final = 9
SVC_ATTR_STATS: Final = 10
SVC_ATTR_PE_NAME: Final = 11
SVC_ATTR_STATS64: Final = 12

DEST_ATTR_ADDR: Final = 1
DEST_ATTR_PORT: Final = 2
DEST_ATTR_FWD_METHOD: Final = 3
DEST_ATTR_WEIGHT: Final = 4
DEST_ATTR_U_THRESH: Final = 5
DEST_ATTR_L_THRESH: Final = 6
DEST_ATTR_ACTIVE_CONNS: Final = 7
DEST_ATTR_INACT_CONNS: Final = 8
DEST_ATTR_PERSIST_CONNS: Final = 9
DEST_ATTR_STATS: Final = 10
DEST_ATTR_ADDR_FAMILY: Final = 11
DEST_ATTR_STATS64: Final = 12
DEST_ATTR_TUN_TYPE: Final = 13
DEST_ATTR_TUN_PORT: Final = 14
DEST_ATTR_TUN_FLAGS: Final = 15

DAEMON_ATTR_STATE: Final = 1
DAEMON_ATTR_MCAST_IFN: Final = 2
DAEMON_ATTR_SYNC_ID: Final = 3
DAEMON_ATTR_SYNC_MAXLEN: Final = 4
DAEMON_ATTR_MCAST_GROUP: Final = 5
DAEMON_ATTR_MCAST_GROUP6: Final = 6
DAEMON_ATTR_MCAST_PORT: Final = 7  # nla_put_u16: host order, unlike every other port
DAEMON_ATTR_MCAST_TTL: Final = 8

STATS_ATTR_CONNS: Final = 1  # CONNS..OUTBPS are 1..10 in model order (Counters then Rates)
STATS_ATTR_PAD: Final = 11

INFO_ATTR_VERSION: Final = 1
INFO_ATTR_CONN_TAB_SIZE: Final = 2

# 32-bit IPVS_*_ATTR_STATS: conns/inpkts/outpkts are u32, bytes u64, rates u32; STATS64 is all u64
_STATS32_CODES: Final = ("I", "I", "I", "Q", "Q", "I", "I", "I", "I", "I")
_STATS64_CODES: Final = ("Q",) * 10

_NLH = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_LEN_TYPE_FLAGS = struct.Struct("=IHH")
_GENL = struct.Struct("=BBH")  # genlmsghdr: cmd, version, reserved
_NLA = struct.Struct("=HH")  # nlattr: len, type
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")
_HDR_LEN: Final = _NLH.size + _GENL.size


def _align(n: int) -> int:
    return (n + 3) & ~3


# --------------------------------------------------------------------------- errors


class NetlinkError(SourceError):
    """The kernel answered a request with an errno."""

    def __init__(self, kind: IssueKind, message: str, code: int) -> None:
        super().__init__(kind, message)
        self.errno = code


def kernel_error(code: int, what: str) -> NetlinkError:
    """Map a kernel errno to lvstop's error kinds, with one clear message."""
    text = f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
    if code in (errno.EPERM, errno.EACCES):
        return NetlinkError(
            IssueKind.NO_PERMISSION,
            f"{what}: {text}: IPVS netlink needs CAP_NET_ADMIN (run as root or grant the capability)",
            code,
        )
    if code in (errno.ESRCH, errno.ENOENT):
        return NetlinkError(IssueKind.INCONSISTENT, f"{what}: {text}: no longer exists", code)
    return NetlinkError(IssueKind.IO, f"{what}: kernel refused: {text}", code)


def _malformed(what: str, detail: str) -> ParseError:
    return ParseError(detail, source=what)


# --------------------------------------------------------------------------- message framing


_RUN: Final = 8  # from this many same-size messages on, scan_chunk checks their lengths at once


def scan_chunk(chunk: bytes | memoryview, what: object) -> tuple[int, bool]:
    """(seq of the first message, True if this chunk ends the reply).

    One recv() returns whole messages of one reply. A reply ends with NLMSG_DONE, NLMSG_ERROR (an
    error or an ack), or a genl message without NLM_F_MULTI (a plain doit reply). Every header is
    checked, in a tight loop: a 100k-dest poll walks 100k of them here.
    """
    n = len(chunk)
    if n < _NLH.size:
        raise _malformed(str(what), f"truncated reply: {n} bytes")
    first_seq: int = _NLH.unpack_from(chunk, 0)[3]
    head = _LEN_TYPE_FLAGS.unpack_from
    size = head(chunk, 0)[0]
    # a dump's datagram of same-size messages: their length words prove the framing at once
    if (
        n >= _RUN * size >= _RUN * _NLH.size
        and not n % size
        and not size % 4
        and memoryview(chunk).cast("I")[:: size // 4].tolist().count(size) == n // size
    ):
        _, mtype, mflags = head(chunk, n - size)
        return first_seq, mtype in (NLMSG_DONE, NLMSG_ERROR) or (
            mtype != NLMSG_NOOP and not mflags & NLM_F_MULTI
        )
    off = 0
    while True:
        if n - off < _NLH.size:
            raise _malformed(str(what), f"truncated netlink header at byte {off}")
        mlen, mtype, mflags = head(chunk, off)
        if mlen < _NLH.size or mlen > n - off:
            raise _malformed(str(what), f"netlink message at byte {off} claims {mlen} bytes, {n - off} left")
        off += (mlen + 3) & ~3
        if off >= n:  # the last message decides
            return first_seq, mtype in (NLMSG_DONE, NLMSG_ERROR) or (
                mtype != NLMSG_NOOP and not mflags & NLM_F_MULTI
            )


def _check_header(buf: bytes, off: int, n: int, what: str) -> tuple[int, int, int, int, int]:
    if n - off < _NLH.size:
        raise _malformed(what, f"truncated netlink header at byte {off}")
    hdr: tuple[int, int, int, int, int] = _NLH.unpack_from(buf, off)
    mlen = hdr[0]
    if mlen < _NLH.size or mlen > n - off:
        raise _malformed(what, f"netlink message at byte {off} claims {mlen} bytes, {n - off} left")
    return hdr


def _control(buf: bytes, off: int, mlen: int, mtype: int, what: str) -> bool:
    """Handle a non-genl message; True when it ends the reply. Raises on kernel errors."""
    if mtype == NLMSG_NOOP:
        return False
    if mtype in (NLMSG_DONE, NLMSG_ERROR):
        # DONE carries the dump's final status, ERROR the request's (0 = ack)
        code = -_I32.unpack_from(buf, off + _NLH.size)[0] if mlen >= _NLH.size + 4 else 0
        if mtype == NLMSG_ERROR and mlen < _NLH.size + 4:
            raise _malformed(what, "truncated NLMSG_ERROR")
        if not 0 <= code < 4096:  # the kernel sends -errno, and errnos are below MAX_ERRNO
            raise _malformed(what, f"netlink error code {-code} is not a negative errno")
        if code:
            raise kernel_error(code, what)
        return True
    if mtype == NLMSG_OVERRUN:
        raise _malformed(what, "netlink overrun: the kernel dropped part of the reply")
    raise _malformed(what, f"unexpected netlink message type {mtype}")


def _genl_messages(
    data: bytes, family_id: int, reply_cmd: int, what: str, *, dump: bool
) -> Iterator[tuple[int, int]]:
    """(offset, length) of each genl message of the reply; checks framing and completeness."""
    n = len(data)
    off = 0
    seen = 0
    finished = False
    while off < n:
        mlen, mtype, _flags, _seq, _pid = _check_header(data, off, n, what)
        if mtype == family_id:
            _check_genl(data, off, mlen, reply_cmd, what)
            seen += 1
            yield off, mlen
        elif _control(data, off, mlen, mtype, what):
            finished = True
            break
        off += _align(mlen)
    if dump and not finished:
        raise _malformed(what, "truncated dump: no NLMSG_DONE")
    if not dump and not seen:
        raise _malformed(what, "empty reply")


def _check_genl(buf: bytes, off: int, mlen: int, reply_cmd: int, what: str) -> None:
    if mlen < _HDR_LEN:
        raise _malformed(what, f"truncated generic netlink header at byte {off}")
    cmd = buf[off + _NLH.size]
    if cmd != reply_cmd:
        raise _malformed(what, f"expected {CMD_NAMES.get(reply_cmd)}, got command {cmd}")


def messages(data: bytes, what: str) -> Iterator[tuple[int, bytes]]:
    """(type, bytes) of each netlink message in a reply."""
    n = len(data)
    off = 0
    while off < n:
        mlen, mtype, _flags, _seq, _pid = _check_header(data, off, n, what)
        yield mtype, data[off : off + mlen]
        off += _align(mlen)


def raise_for_error(data: bytes, what: str) -> bool:
    """Raise the kernel's error if the reply carries one; True if it holds an ack or NLMSG_DONE."""
    n = len(data)
    off = 0
    while off < n:
        mlen, mtype, _flags, _seq, _pid = _check_header(data, off, n, what)
        if mtype in (NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN) and _control(data, off, mlen, mtype, what):
            return True
        off += _align(mlen)
    return False


def ack(data: bytes, what: str) -> None:
    """Check the reply of a request sent with NLM_F_ACK and no reply payload (SET_DEST)."""
    if not raise_for_error(data, what):
        raise _malformed(what, "no acknowledgement in the reply")


# --------------------------------------------------------------------------- attribute walking


def _attrs(buf: bytes, start: int, end: int, what: str, headers: list[int]) -> dict[int, tuple[int, int]]:
    """One level of attributes: type -> (payload offset, payload length); header offsets appended."""
    out: dict[int, tuple[int, int]] = {}
    while end - start >= _NLA.size:
        alen, atype = _NLA.unpack_from(buf, start)
        if alen < _NLA.size or alen > end - start:
            raise _malformed(what, f"attribute {atype & NLA_TYPE_MASK} at byte {start} has bad length {alen}")
        out[atype & NLA_TYPE_MASK] = (start + _NLA.size, alen - _NLA.size)
        headers.append(start)
        start += _align(alen)
    if 0 < end - start < _NLA.size:
        raise _malformed(what, f"truncated attribute at byte {start}")
    return out


@dataclass(frozen=True, slots=True)
class _Field:
    """Where one value of a message's canonical tuple comes from (absent: offset -1, value None)."""

    offset: int
    code: str


_ABSENT: Final = _Field(-1, "")


def _field(buf: bytes, attrs: dict[int, tuple[int, int]], atype: int, code: str, what: str) -> _Field:
    spot = attrs.get(atype)
    if spot is None:
        return _ABSENT
    off, length = spot
    if length < struct.calcsize("=" + code):
        raise _malformed(what, f"attribute {atype} too short ({length} bytes) at byte {off}")
    return _Field(off, code)


def _string_field(attrs: dict[int, tuple[int, int]], atype: int) -> _Field:
    spot = attrs.get(atype)
    return _ABSENT if spot is None else _Field(spot[0], f"{spot[1]}s")


def _stats_fields(
    buf: bytes, outer: dict[int, tuple[int, int]], a64: int, a32: int, what: str, headers: list[int]
) -> list[_Field]:
    """The 10 stats values from STATS64, else from the 32-bit STATS (kernels before 4.1)."""
    for atype, codes in ((a64, _STATS64_CODES), (a32, _STATS32_CODES)):
        spot = outer.get(atype)
        if spot is not None:
            inner = _attrs(buf, spot[0], spot[0] + spot[1], what, headers)
            fields = [_field(buf, inner, i + 1, c, what) for i, c in enumerate(codes)]
            if _ABSENT in fields:
                raise _malformed(what, f"incomplete stats attribute {atype}")
            return fields
    return [_ABSENT] * 10


def _read(buf: bytes, fields: list[_Field], defaults: tuple[Any, ...] | None = None) -> tuple[Any, ...]:
    """The values of a message in the builders' order; absent attributes take their default (None)."""
    return tuple(
        d if f.offset < 0 else struct.unpack_from("=" + f.code, buf, f.offset)[0]
        for f, d in zip(fields, defaults or (None,) * len(fields), strict=True)
    )


# --------------------------------------------------------------------------- compiled layouts


_BLOCK: Final = 16  # messages verified per big-integer comparison
_LAYOUTS_PER_LENGTH: Final = 8


def header_mask(mlen: int, headers: list[int]) -> bytes:
    """The bytes of a message of `mlen` bytes that must equal the first message's in a run of same-layout
    messages: the nlmsghdr length and type (flags, seq and pid may differ) and each header at `headers`."""
    mask = bytearray(mlen)
    mask[0:6] = b"\xff" * 6
    for h in headers:
        mask[h : h + 4] = b"\xff" * 4
    return bytes(mask)


class _Layout:
    """A compiled attribute layout: verifies and reads whole runs of same-layout messages.

    Verification compares every header byte (nlmsghdr length and type, the genl header, every
    nlattr header) of a block of messages in one masked big-integer comparison, which costs less
    than unpacking the headers. `values` then reads only the values; `canon` reorders them into the
    reference path's order (None when the kernel writes them in that order, as 4.x-6.x kernels do
    for dests).
    """

    __slots__ = ("block", "canon", "one", "pad", "size", "values")

    def __init__(
        self,
        buf: bytes,
        off: int,
        mlen: int,
        headers: list[int],
        fields: list[_Field],
        defaults: tuple[Any, ...],
    ) -> None:
        if mlen % 4:
            raise ValueError("unaligned message")
        self.size = mlen
        mask = header_mask(mlen, [h - off for h in headers])
        expected = bytes(x & y for x, y in zip(buf[off : off + mlen], mask, strict=True))
        self.one = self._pair(mask, expected, 1)
        self.block = self._pair(mask, expected, _BLOCK)
        present = sorted((f.offset - off, f.code, i) for i, f in enumerate(fields) if f.offset >= 0)
        fmt = ["="]
        pos = 0
        for rel, code, _i in present:
            if rel < pos:
                raise ValueError("overlapping attributes")
            fmt.append(f"{rel - pos}x{code}")
            pos = rel + struct.calcsize("=" + code)
        fmt.append(f"{mlen - pos}x")
        self.values = struct.Struct("".join(fmt))
        order = [i for _rel, _code, i in present]
        where = {canon: k for k, canon in enumerate(order)}
        # absent values are read from the defaults appended to each row
        self.pad = defaults if len(order) < len(fields) else None
        self.canon = (
            None
            if order == list(range(len(fields)))
            else itemgetter(*(where.get(i, len(order) + i) for i in range(len(fields))))
        )

    @staticmethod
    def _pair(mask: bytes, expected: bytes, count: int) -> tuple[int, int]:
        return int.from_bytes(mask * count, "little"), int.from_bytes(expected * count, "little")

    def run(self, data: bytes, view: memoryview, off: int) -> int:
        """How many messages from `off` on have exactly this layout."""
        size = self.size
        left = len(data) - off
        mask, expected = self.one
        if left < size or int.from_bytes(view[off : off + size], "little") & mask != expected:
            return 0  # checked alone first: a mismatch is cheap to find
        off += size
        left -= size
        k = 1
        mask, expected = self.block
        step = _BLOCK * size
        while left >= step and int.from_bytes(view[off : off + step], "little") & mask == expected:
            off += step
            left -= step
            k += _BLOCK
        mask, expected = self.one
        while left >= size and int.from_bytes(view[off : off + size], "little") & mask == expected:
            off += size
            left -= size
            k += 1
        return k


def _compile(
    buf: bytes, off: int, mlen: int, headers: list[int], fields: list[_Field], defaults: tuple[Any, ...]
) -> _Layout | None:
    try:
        return _Layout(buf, off, mlen, headers, fields, defaults)
    except (ValueError, struct.error):
        return None  # odd layout (e.g. duplicate attributes): keep using the reference path


_T = TypeVar("_T")


def _decode_dump(
    data: bytes,
    family_id: int,
    reply_cmd: int,
    what: str,
    walk: Callable[[bytes, int, int, str], tuple[list[int], list[_Field]]],
    build: Callable[[tuple[Any, ...], int], _T],
    defaults: tuple[Any, ...],
    layouts: dict[int, list[_Layout]],
    ctx: int,
    fast: bool,
) -> list[_T]:
    """Decode every genl message of a reply: compiled runs where possible, else the reference path."""
    n = len(data)
    view = memoryview(data)
    off = 0
    out: list[_T] = []
    finished = False
    while off < n:
        mlen, mtype, _flags, _seq, _pid = _check_header(data, off, n, what)
        if mtype == family_id:
            k = 0
            for lay in layouts.get(mlen, ()) if fast else ():
                k = lay.run(data, view, off)
                if k:
                    break
            if k:
                end = off + k * mlen
                rows = lay.values.iter_unpack(view[off:end])
                canon, pad = lay.canon, lay.pad
                if canon is None:
                    out += [build(v, ctx) for v in rows]
                elif pad is not None:
                    out += [build(canon(v + pad), ctx) for v in rows]
                else:
                    out += [build(canon(v), ctx) for v in rows]
                off = end
                continue
            _check_genl(data, off, mlen, reply_cmd, what)
            headers, fields = walk(data, off, mlen, what)
            out.append(build(_read(data, fields, defaults), ctx))
            if fast:
                compiled = _compile(data, off, mlen, [off + _NLH.size, *headers], fields, defaults)
                if compiled is not None:  # a few layouts per length: scheduler names of equal padding
                    same = layouts.setdefault(mlen, [])
                    same.insert(0, compiled)
                    del same[_LAYOUTS_PER_LENGTH:]
        elif _control(data, off, mlen, mtype, what):
            finished = True
            break
        off += _align(mlen)
    if not finished:
        raise _malformed(what, "truncated dump: no NLMSG_DONE")
    return out


def _nested(
    buf: bytes, off: int, mlen: int, cmd_attr: int, what: str, headers: list[int]
) -> dict[int, tuple[int, int]]:
    top = _attrs(buf, off + _HDR_LEN, off + mlen, what, headers)
    spot = top.get(cmd_attr)
    if spot is None:
        raise _malformed(what, f"message at byte {off} lacks attribute {cmd_attr}")
    return _attrs(buf, spot[0], spot[0] + spot[1], what, headers)


# --------------------------------------------------------------------------- model construction


def _stats(t: tuple[Any, ...], start: int) -> tuple[Counters | None, Rates | None]:
    if t[start] is None:
        return None, None
    return Counters(*t[start : start + 5]), Rates(*t[start + 5 : start + 10])


_NAMES: Final[dict[int, dict[bytes, str]]] = {AF_INET: {}, AF_INET6: {}}
_NAME_CACHE_MAX: Final = 1 << 16


def address_text(family: int, raw: bytes) -> str:
    """Text of a union nf_inet_addr, as model.normalize_address writes it (cached: real servers repeat)."""
    cache = _NAMES.get(family)
    if cache is None:
        raise ParseError(f"unknown address family {family}", source="netlink")
    name = cache.get(raw)
    if name is None:
        try:
            name = str(
                ipaddress.IPv4Address(raw[:4]) if family == AF_INET else ipaddress.IPv6Address(raw[:16])
            )
        except ValueError:
            raise ParseError(f"address of {len(raw)} bytes for family {family}", source="netlink") from None
        if len(cache) >= _NAME_CACHE_MAX:
            cache.clear()
        cache[raw] = name
    return name


_FWD: Final = {m.value: m for m in FwdMethod}
_TUN: Final = {t.value: t for t in TunType}
_ntohs = socket.ntohs


def _dest_walk(buf: bytes, off: int, mlen: int, what: str) -> tuple[list[int], list[_Field]]:
    headers: list[int] = []
    a = _nested(buf, off, mlen, CMD_ATTR_DEST, what, headers)
    # the order ip_vs_genl_fill_dest writes them in, so compiled layouts need no reordering
    fields = [
        _string_field(a, DEST_ATTR_ADDR),
        _field(buf, a, DEST_ATTR_PORT, "H", what),
        _field(buf, a, DEST_ATTR_FWD_METHOD, "I", what),
        _field(buf, a, DEST_ATTR_WEIGHT, "I", what),
        _field(buf, a, DEST_ATTR_TUN_TYPE, "B", what),
        _field(buf, a, DEST_ATTR_TUN_PORT, "H", what),
        _field(buf, a, DEST_ATTR_TUN_FLAGS, "H", what),
        _field(buf, a, DEST_ATTR_U_THRESH, "I", what),
        _field(buf, a, DEST_ATTR_L_THRESH, "I", what),
        _field(buf, a, DEST_ATTR_ACTIVE_CONNS, "I", what),
        _field(buf, a, DEST_ATTR_INACT_CONNS, "I", what),
        _field(buf, a, DEST_ATTR_PERSIST_CONNS, "I", what),
        _field(buf, a, DEST_ATTR_ADDR_FAMILY, "H", what),
    ]
    for f, name in zip(fields, ("address", "port", "forwarding method", "weight"), strict=False):
        if f is _ABSENT:
            raise _malformed(what, f"dest message at byte {off} lacks its {name}")
    fields += _stats_fields(buf, a, DEST_ATTR_STATS64, DEST_ATTR_STATS, what, headers)
    return headers, fields


_DEST_DEFAULTS: Final = (None, None, None, None, 0, 0, 0, 0, 0, 0, 0, None, None) + (None,) * 10


def _build_dest(t: tuple[Any, ...], svc_family: int) -> Dest:
    (raw, port, fwd, weight, tun_type, tun_port, tun_flags, u_th, l_th, active, inact, persist, family,
     conns, inpkts, outpkts, inbytes, outbytes, cps, inpps, outpps, inbps, outbps) = t  # fmt: skip
    if family is None:
        family = svc_family  # kernels before 4.3 do not send the dest's own family
    names = _NAMES.get(family)
    address = names.get(raw) if names is not None else None
    if address is None:
        address = address_text(family, raw)
    method = _FWD.get(fwd)
    tun = _TUN.get(tun_type)
    if method is None or tun is None:
        raise ParseError(f"unknown forwarding method {fwd} or tunnel type {tun_type}", source="netlink dest")
    if conns is None:
        counters = rates = None
    else:
        counters = Counters(conns, inpkts, outpkts, inbytes, outbytes)
        rates = Rates(cps, inpps, outpps, inbps, outbps)
    return Dest(
        family,
        address,
        _ntohs(port),
        method,
        weight,
        u_th,
        l_th,
        active,
        inact,
        persist,
        tun,
        _ntohs(tun_port) if tun_port else 0,
        tun_flags,
        counters,
        rates,
        None,
    )


def _service_walk(buf: bytes, off: int, mlen: int, what: str) -> tuple[list[int], list[_Field]]:
    headers: list[int] = []
    a = _nested(buf, off, mlen, CMD_ATTR_SERVICE, what, headers)
    fields = [
        _field(buf, a, SVC_ATTR_AF, "H", what),
        _field(buf, a, SVC_ATTR_PROTOCOL, "H", what),
        _string_field(a, SVC_ATTR_ADDR),
        _field(buf, a, SVC_ATTR_PORT, "H", what),
        _field(buf, a, SVC_ATTR_FWMARK, "I", what),
        _string_field(a, SVC_ATTR_SCHED_NAME),
        _field(buf, a, SVC_ATTR_FLAGS, "I", what),  # struct ip_vs_flags {flags, mask}: flags first
        _field(buf, a, SVC_ATTR_TIMEOUT, "I", what),
        _field(buf, a, SVC_ATTR_NETMASK, "4s", what),
        _string_field(a, SVC_ATTR_PE_NAME),
    ]
    fields += _stats_fields(buf, a, SVC_ATTR_STATS64, SVC_ATTR_STATS, what, headers)
    return headers, fields


def _cstr(raw: bytes | None) -> str:
    return "" if raw is None else raw.split(b"\0", 1)[0].decode("ascii", "replace")


_PROTOCOLS: Final = {p.value: p for p in Protocol if p is not Protocol.NONE}


_SERVICE_DEFAULTS: Final = (None, None, None, None, None, None, 0, 0, None, None) + (None,) * 10


_SERVICE_KEYS: dict[tuple[Any, ...], ServiceKey] = {}  # raw key fields -> their key, across reads
_SERVICE_KEYS_MAX: Final = 1 << 16


def _build_service_key(t: tuple[Any, ...], _ctx: int) -> ServiceKey:
    """The key of a service's raw fields, the same object while the service is: a poll decodes every
    key twice (dump and re-check), and equal lists of the same keys compare by identity."""
    raw = t[:5]
    key = _SERVICE_KEYS.get(raw)
    if key is None:
        key = _new_service_key(*raw)
        if len(_SERVICE_KEYS) >= _SERVICE_KEYS_MAX:
            _SERVICE_KEYS.clear()  # services come and go: start over rather than grow without end
        _SERVICE_KEYS[raw] = key
    return key


def _new_service_key(
    af: int, proto: int | None, raw: bytes | None, port: int | None, fwmark: int | None
) -> ServiceKey:
    if af not in (AF_INET, AF_INET6):
        raise ParseError(f"service with unknown address family {af}", source="netlink service")
    if fwmark is not None:
        return ServiceKey(af, Protocol.NONE, "", 0, fwmark)
    protocol = _PROTOCOLS.get(proto)  # type: ignore[arg-type]
    if protocol is None or raw is None or port is None:
        raise ParseError(
            f"service without a fwmark needs protocol, address and port (protocol {proto})",
            source="netlink service",
        )
    return ServiceKey(af, protocol, address_text(af, raw), _ntohs(port))


def _build_service(t: tuple[Any, ...], _ctx: int) -> Service:
    key = _build_service_key(t, _ctx)
    af, sched, flags, timeout, netmask, pe = t[0], *t[5:10]
    if netmask is None:
        mask = 0xFFFFFFFF if af == AF_INET else 128
    else:  # IPv4: a be32 mask; IPv6: the prefix length as a host-order u32
        mask = int.from_bytes(netmask, "big") if af == AF_INET else _U32.unpack(netmask)[0]
    counters, rates = _stats(t, 10)
    return Service(key, _cstr(sched), flags, timeout, mask, _cstr(pe), counters, rates)


_DEST_LAYOUTS: dict[int, list[_Layout]] = {}
_SERVICE_LAYOUTS: dict[int, list[_Layout]] = {}


# --------------------------------------------------------------------------- dest dumps as columns

# the dest fields of _dest_walk, in its order, as numpy types (ports are be16 on the wire)
_DEST_NP: Final = ("V16", ">u2", "=u4", "=u4", "u1", ">u2", "=u2", "=u4", "=u4", "=u4", "=u4", "=u4", "=u2")
_DEST_NAMES: Final = (
    "addr", "port", "fwd", "weight", "tun_type", "tun_port", "tun_flags",
    "u_threshold", "l_threshold", "active", "inactive", "persist", "family",
)  # fmt: skip
_STATS_NP: Final = {"I": "=u4", "Q": "=u8"}
DONE_LEN: Final = _NLH.size + 4


class DestColumns:
    """A compiled dest message layout for whole dumps at once: a numpy dtype reads every value of a
    run of same-layout messages, and a masked comparison checks every header of every message (the
    nlmsghdr length and type, the genl header, each nlattr header) against the first one's."""

    __slots__ = ("dtype", "expected", "mask", "size", "words")

    def __init__(self, buf: bytes, off: int, mlen: int, headers: list[int], fields: list[_Field]) -> None:
        if mlen % 4 or fields[0].code != "16s":
            raise ValueError("unaligned message or an odd address")
        self.size = mlen
        m = np.frombuffer(header_mask(mlen, [h - off for h in headers]), "<u4")
        self.words = np.flatnonzero(m)
        self.mask = m[self.words]
        self.expected = np.frombuffer(buf[off : off + mlen], "<u4")[self.words] & self.mask
        names, formats, offsets = [], [], []
        codes = [*_DEST_NP, *(_STATS_NP.get(f.code, "") for f in fields[len(_DEST_NP) :])]
        for i, (f, code) in enumerate(zip(fields, codes, strict=True)):
            if f.offset >= 0:
                names.append(_DEST_NAMES[i] if i < len(_DEST_NAMES) else f"s{i - len(_DEST_NAMES)}")
                formats.append(code)
                offsets.append(f.offset - off)
        self.dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": mlen})

    def bad_rows(self, body: bytes | memoryview) -> Array:
        """Rows of `body` (whole messages of this size) whose headers differ from the layout's."""
        words = np.take(np.frombuffer(body, "<u4").reshape(-1, self.size // 4), self.words, axis=1)
        words &= self.mask  # in place, on the gathered copy: half the time of a masked temporary at 100k
        return np.flatnonzero((words != self.expected).any(axis=1))

    def table(self, body: bytes | memoryview, service: Array, svc_family: Array) -> tuple[DestTable, Array]:
        """The dests of `body` and the rows with values the model has no name for (the reference
        path says which)."""
        a = np.frombuffer(body, self.dtype)
        n = len(a)
        names = self.dtype.names or ()
        t = DestTable.empty(n)
        t.service[:] = service
        t.family[:] = a["family"] if "family" in names else svc_family  # not sent before 4.3
        for name in _DEST_NAMES:
            if name in names and name != "family":
                getattr(t, name)[:] = a[name]
        if "persist" not in names:
            t.persist[:] = -1
        if "s0" in names:
            for k in range(5):  # written in place (32-bit stats widened as they are)
                t.counters[:, k] = a[f"s{k}"]
                t.rates[:, k] = a[f"s{k + 5}"]
            t.has_counters[:] = t.has_rates[:] = True
        known = (t.family == AF_INET) | (t.family == AF_INET6)
        odd = (a["fwd"] > max(_FWD)) | ((a["tun_type"] > max(_TUN)) if "tun_type" in names else False)
        return t, np.flatnonzero(~known | odd)


_DEST_COLUMNS: dict[int, DestColumns] = {}


def dest_columns(data: bytes | memoryview, family_id: int, *, ended: bool = False) -> DestColumns | None:
    """The compiled layout of the reply's dest messages if the reply is nothing but dest messages of
    one size and an NLMSG_DONE without error (the kernel's usual answer); None otherwise. `ended`:
    the reply's clean NLMSG_DONE was checked and left out by the caller (see decode_dest_table)."""
    n = len(data)
    if not ended:
        if n < DONE_LEN or _NLH.unpack_from(data, n - DONE_LEN)[:2] != (DONE_LEN, NLMSG_DONE):
            return None
        if _I32.unpack_from(data, n - 4)[0] or n == DONE_LEN:
            return None
        n -= DONE_LEN
    if n < _HDR_LEN:
        return None
    mlen, mtype = _LEN_TYPE_FLAGS.unpack_from(data, 0)[:2]
    if mtype != family_id or mlen < _HDR_LEN or n % mlen:
        return None
    layout = _DEST_COLUMNS.get(mlen)
    if layout is None:
        what = "netlink GET_DEST reply"
        first = bytes(data[:mlen])
        try:
            _check_genl(first, 0, mlen, CMD_NEW_DEST, what)
            headers, fields = _dest_walk(first, 0, mlen, what)
            layout = DestColumns(first, 0, mlen, [_NLH.size, *headers], fields)
        except (ParseError, ValueError):
            return None  # the reference path says what is wrong
        _DEST_COLUMNS[mlen] = layout
    return layout


Span = tuple[int, int, bool]
"""A reply in a receive buffer: its start and end, and whether the caller left out the clean NLMSG_DONE
that ended it (an NLMSG_DONE alone in the last datagram, as the kernel sends it)."""
CLEAN_DONE: Final = _NLH.pack(DONE_LEN, NLMSG_DONE, NLM_F_MULTI, 0, 0) + _I32.pack(0)


def is_clean_done(data: bytes | memoryview) -> bool:
    """Whether `data` is one NLMSG_DONE without error, nothing else."""
    return (
        len(data) == DONE_LEN
        and _NLH.unpack_from(data, 0)[:2] == (DONE_LEN, NLMSG_DONE)
        and not _I32.unpack_from(data, _NLH.size)[0]
    )


def decode_dest_table(
    buf: bytes | bytearray | memoryview, spans: list[Span], family_id: int, svc_families: list[int]
) -> tuple[DestTable, dict[int, Exception]]:
    """GET_DEST dumps (one per service, reply i of service i at spans[i] of `buf`) -> one DestTable of
    all their dests, and the error of each reply that could not be decoded (its dests are left out).

    Replies of the kernel's usual shape are decoded together on columns, straight from `buf` when their
    messages lie back to back there (no copy); any other (an error, an odd layout, a value the model
    cannot name) goes through decode_dests, which says what is wrong.
    """
    view = memoryview(buf)
    fast: dict[int, list[int]] = {}  # layout size -> replies
    slow: list[int] = []
    ends: list[int] = []  # where each reply's dest messages end
    for i, (start, end, ended) in enumerate(spans):
        ends.append(end if ended else end - DONE_LEN)
        if ended and start == end:
            continue  # an empty dump
        layout = dest_columns(view[start:end], family_id, ended=ended)
        if layout is not None:
            fast.setdefault(layout.size, []).append(i)
        elif not (not ended and is_clean_done(view[start:end])):  # not an empty dump
            slow.append(i)
    parts: list[DestTable] = []
    for size, which in fast.items():
        layout = _DEST_COLUMNS[size]
        starts = [spans[i][0] for i in which]
        stops = [ends[i] for i in which]
        if starts[1:] == stops[:-1]:  # back to back: the usual poll
            body: bytes | memoryview = view[starts[0] : stops[-1]]
        else:
            body = b"".join([view[a:b] for a, b in zip(starts, stops, strict=True)])
        counts = (np.array(stops) - np.array(starts)) // size
        service = np.repeat(np.array(which, np.intp), counts)
        t, invalid = layout.table(body, service, np.array(svc_families, np.uint16)[service])
        bad = np.union1d(layout.bad_rows(body), invalid)
        if len(bad):
            odd = np.unique(service[bad])
            slow += odd.tolist()
            t = t.take(np.flatnonzero(~np.isin(service, odd)))
        parts.append(t)
    errors: dict[int, Exception] = {}
    for i in slow:
        start, end, ended = spans[i]
        try:
            rows = decode_dests(
                bytes(view[start:end]) + (CLEAN_DONE if ended else b""), family_id, svc_families[i]
            )
        except (ParseError, SourceError) as e:
            # kept without its traceback: the decoder's frames hold memoryviews with live exports, and
            # a reference cycle through them (errors -> traceback -> this frame) crashes the collector
            errors[i] = e.with_traceback(None)
            continue
        t = DestTable.from_rows([Service(ServiceKey(0, Protocol.NONE, "", 0), "", dests=tuple(rows))])
        t.service[:] = i
        parts.append(t)
    table = DestTable.concat(parts) if parts else DestTable.empty()
    if len(parts) > 1:
        table = table.take(np.argsort(table.service, kind="stable"))
    return table, errors


# --------------------------------------------------------------------------- public decoders


def decode_services(data: bytes, family_id: int, *, fast: bool = True) -> list[Service]:
    """A GET_SERVICE dump -> services, without dests."""
    return _service_dump(data, family_id, _build_service, fast)


def decode_service_keys(data: bytes, family_id: int) -> list[ServiceKey]:
    """A GET_SERVICE dump -> the keys of its services alone (checked as decode_services checks)."""
    return _service_dump(data, family_id, _build_service_key, True)


def _service_dump(
    data: bytes, family_id: int, build: Callable[[tuple[Any, ...], int], _T], fast: bool
) -> list[_T]:
    what = "netlink GET_SERVICE reply"
    return _decode_dump(
        data,
        family_id,
        CMD_NEW_SERVICE,
        what,
        _service_walk,
        build,
        _SERVICE_DEFAULTS,
        _SERVICE_LAYOUTS,
        0,
        fast,
    )


def decode_dests(data: bytes, family_id: int, svc_family: int, *, fast: bool = True) -> list[Dest]:
    """A GET_DEST dump -> dests. svc_family names dests on kernels that do not send their family."""
    return _decode_dump(
        data,
        family_id,
        CMD_NEW_DEST,
        "netlink GET_DEST reply",
        _dest_walk,
        _build_dest,
        _DEST_DEFAULTS,
        _DEST_LAYOUTS,
        svc_family,
        fast,
    )


def decode_daemons(data: bytes, family_id: int) -> list[Daemon]:
    what = "netlink GET_DAEMON reply"
    out = []
    for off, mlen in _genl_messages(data, family_id, CMD_NEW_DAEMON, what, dump=True):
        a = _nested(data, off, mlen, CMD_ATTR_DAEMON, what, [])
        state, syncid, maxlen, port, ttl, group, group6, ifn = _read(
            data,
            [
                _field(data, a, DAEMON_ATTR_STATE, "I", what),
                _field(data, a, DAEMON_ATTR_SYNC_ID, "I", what),
                _field(data, a, DAEMON_ATTR_SYNC_MAXLEN, "H", what),
                _field(data, a, DAEMON_ATTR_MCAST_PORT, "H", what),
                _field(data, a, DAEMON_ATTR_MCAST_TTL, "B", what),
                _field(data, a, DAEMON_ATTR_MCAST_GROUP, "4s", what),
                _field(data, a, DAEMON_ATTR_MCAST_GROUP6, "16s", what),
                _string_field(a, DAEMON_ATTR_MCAST_IFN),
            ],
        )
        if state not in (DaemonState.MASTER, DaemonState.BACKUP) or syncid is None or ifn is None:
            raise _malformed(what, f"daemon message at byte {off} lacks state, interface or syncid")
        out.append(
            Daemon(
                DaemonState(state),
                _cstr(ifn),
                syncid,
                maxlen,
                None if group is None else address_text(AF_INET, group),
                None if group6 is None else address_text(AF_INET6, group6),
                port,
                ttl,
            )
        )
    return out


def _doit_attrs(
    data: bytes, family_id: int, reply_cmd: int, what: str
) -> tuple[dict[int, tuple[int, int]], int]:
    (off, mlen), *_ = _genl_messages(data, family_id, reply_cmd, what, dump=False)
    return _attrs(data, off + _HDR_LEN, off + mlen, what, []), off


def decode_config(data: bytes, family_id: int) -> Timeouts:
    what = "netlink GET_CONFIG reply"
    a, _ = _doit_attrs(data, family_id, CMD_SET_CONFIG, what)
    values = _read(
        data,
        [
            _field(data, a, t, "I", what)
            for t in (CMD_ATTR_TIMEOUT_TCP, CMD_ATTR_TIMEOUT_TCP_FIN, CMD_ATTR_TIMEOUT_UDP)
        ],
    )
    if None in values:
        raise _malformed(what, "a timeout is missing")
    return Timeouts(*values)


def decode_info(data: bytes, family_id: int) -> tuple[str, int]:
    """GET_INFO -> ("1.2.1", connection hash table size)."""
    what = "netlink GET_INFO reply"
    a, _ = _doit_attrs(data, family_id, CMD_SET_INFO, what)
    version, size = _read(
        data,
        [_field(data, a, INFO_ATTR_VERSION, "I", what), _field(data, a, INFO_ATTR_CONN_TAB_SIZE, "I", what)],
    )
    if version is None or size is None:
        raise _malformed(what, "version or table size missing")
    return f"{version >> 16 & 0xFF}.{version >> 8 & 0xFF}.{version & 0xFF}", size


# --------------------------------------------------------------------------- encoders


def nla(atype: int, payload: bytes) -> bytes:
    n = _NLA.size + len(payload)
    return _NLA.pack(n, atype) + payload + b"\0" * (_align(n) - n)


def _addr(family: int, address: str) -> bytes:
    return socket.inet_pton(family, address).ljust(16, b"\0")


def _be16(v: int) -> bytes:
    return struct.pack(">H", v)


def _u16(v: int) -> bytes:
    return struct.pack("=H", v)


def _u32(v: int) -> bytes:
    return struct.pack("=I", v)


def encode_service_key(key: ServiceKey) -> bytes:
    """The attributes the kernel needs to find a service (inside IPVS_CMD_ATTR_SERVICE)."""
    if key.is_fwmark:
        return nla(SVC_ATTR_AF, _u16(key.family)) + nla(SVC_ATTR_FWMARK, _u32(key.fwmark))
    return (
        nla(SVC_ATTR_AF, _u16(key.family))
        + nla(SVC_ATTR_PROTOCOL, _u16(key.protocol))
        + nla(SVC_ATTR_ADDR, _addr(key.family, key.address))
        + nla(SVC_ATTR_PORT, _be16(key.port))
    )


def _dest_settings(dest: Dest) -> bytes:
    """What SET_DEST must carry besides the family: everything a weight edit must preserve."""
    tt, tp, tf, ut, lt = dest.tun_type, dest.tun_port, dest.tun_flags, dest.u_threshold, dest.l_threshold
    if tt is None or tp is None or tf is None or ut is None or lt is None:  # read from /proc: unknown
        raise ValueError(f"{dest.key}: SET_DEST needs thresholds and tunnel settings, and they are unknown")
    return (
        nla(DEST_ATTR_ADDR, _addr(dest.family, dest.address))
        + nla(DEST_ATTR_PORT, _be16(dest.port))
        + nla(DEST_ATTR_FWD_METHOD, _u32(dest.fwd))
        + nla(DEST_ATTR_WEIGHT, _u32(dest.weight))
        + nla(DEST_ATTR_TUN_TYPE, bytes([tt]))
        + nla(DEST_ATTR_TUN_PORT, _be16(tp))
        + nla(DEST_ATTR_TUN_FLAGS, _u16(tf))
        + nla(DEST_ATTR_U_THRESH, _u32(ut))
        + nla(DEST_ATTR_L_THRESH, _u32(lt))
    )


def message(family_id: int, cmd: int, payload: bytes, *, flags: int, seq: int, pid: int = 0) -> bytes:
    body = _GENL.pack(cmd, IPVS_GENL_VERSION, 0) + payload
    return _NLH.pack(_NLH.size + len(body), family_id, flags, seq, pid) + body


def get_services_request(family_id: int, seq: int) -> bytes:
    return message(family_id, CMD_GET_SERVICE, b"", flags=NLM_F_REQUEST | NLM_F_DUMP, seq=seq)


def with_seq(request: bytes, seq: int) -> bytes:
    """A request with another sequence number (a poll sends the same GET_DEST requests every time)."""
    return request[:8] + _U32.pack(seq) + request[12:]


def get_dests_request(family_id: int, seq: int, key: ServiceKey) -> bytes:
    return message(
        family_id,
        CMD_GET_DEST,
        nla(CMD_ATTR_SERVICE, encode_service_key(key)),
        flags=NLM_F_REQUEST | NLM_F_DUMP,
        seq=seq,
    )


def set_dest_request(family_id: int, seq: int, key: ServiceKey, dest: Dest) -> bytes:
    """SET_DEST with the whole dest: the kernel resets any tunnel field left out."""
    settings = _dest_settings(dest) + nla(DEST_ATTR_ADDR_FAMILY, _u16(dest.family))
    payload = nla(CMD_ATTR_SERVICE, encode_service_key(key)) + nla(CMD_ATTR_DEST, settings)
    return message(family_id, CMD_SET_DEST, payload, flags=NLM_F_REQUEST | NLM_F_ACK, seq=seq)


def get_info_request(family_id: int, seq: int) -> bytes:
    return message(family_id, CMD_GET_INFO, b"", flags=NLM_F_REQUEST, seq=seq)


def get_config_request(family_id: int, seq: int) -> bytes:
    return message(family_id, CMD_GET_CONFIG, b"", flags=NLM_F_REQUEST, seq=seq)


def get_daemons_request(family_id: int, seq: int) -> bytes:
    return message(family_id, CMD_GET_DAEMON, b"", flags=NLM_F_REQUEST | NLM_F_DUMP, seq=seq)
