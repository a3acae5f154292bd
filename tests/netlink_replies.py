"""Replies of a stand-in kernel: GET_SERVICE / GET_DEST payloads as ip_vs_genl_fill_service / _fill_dest
write them, NLMSG_DONE and NLMSG_ERROR. For tests and bench/fake_kernel.py; lvstop itself only decodes.
(Tests import it as `netlink_replies`: pytest puts tests/ on the path; bench/ adds it.)"""

from __future__ import annotations

import struct

from lvstop.model import AF_INET, Counters, Dest, Rates, Service
from lvstop.sources.wire import (
    _I32,
    _NLH,
    _STATS32_CODES,
    _STATS64_CODES,
    DEST_ATTR_ACTIVE_CONNS,
    DEST_ATTR_ADDR_FAMILY,
    DEST_ATTR_INACT_CONNS,
    DEST_ATTR_PERSIST_CONNS,
    DEST_ATTR_STATS,
    DEST_ATTR_STATS64,
    NLM_F_MULTI,
    NLMSG_DONE,
    NLMSG_ERROR,
    SVC_ATTR_FLAGS,
    SVC_ATTR_NETMASK,
    SVC_ATTR_PE_NAME,
    SVC_ATTR_SCHED_NAME,
    SVC_ATTR_STATS,
    SVC_ATTR_STATS64,
    SVC_ATTR_TIMEOUT,
    _dest_settings,
    _u16,
    _u32,
    encode_service_key,
    nla,
)


def encode_stats(counters: Counters | None, rates: Rates | None, *, wide: bool) -> bytes:
    """The nested stats attributes as ip_vs_genl_fill_stats(64) writes them."""
    c = counters or Counters()
    r = rates or Rates()
    values = (
        c.conns,
        c.inpkts,
        c.outpkts,
        c.inbytes,
        c.outbytes,
        r.cps,
        r.inpps,
        r.outpps,
        r.inbps,
        r.outbps,
    )
    codes = _STATS64_CODES if wide else _STATS32_CODES
    # the 32-bit attribute carries (u32) casts of the counters, as the kernel's fill_stats does
    return b"".join(
        nla(i + 1, struct.pack("=" + code, int(v) & (0xFFFFFFFF if code == "I" else (1 << 64) - 1)))
        for i, (code, v) in enumerate(zip(codes, values, strict=True))
    )


def encode_service(svc: Service, *, stats64: bool = True) -> bytes:
    """The IPVS_CMD_ATTR_SERVICE payload as the kernel fills it in a GET_SERVICE reply."""
    k = svc.key
    netmask = struct.pack(">I" if k.family == AF_INET else "=I", svc.netmask)
    out = [
        encode_service_key(k),
        nla(SVC_ATTR_SCHED_NAME, svc.scheduler.encode() + b"\0"),
        nla(SVC_ATTR_PE_NAME, svc.pe_name.encode() + b"\0") if svc.pe_name else b"",
        nla(SVC_ATTR_FLAGS, struct.pack("=II", svc.flags, 0xFFFFFFFF)),
        nla(SVC_ATTR_TIMEOUT, _u32(svc.timeout)),
        nla(SVC_ATTR_NETMASK, netmask),
        nla(SVC_ATTR_STATS, encode_stats(svc.counters, svc.rates, wide=False)),
    ]
    if stats64:
        out.append(nla(SVC_ATTR_STATS64, encode_stats(svc.counters, svc.rates, wide=True)))
    return b"".join(out)


def encode_dest(dest: Dest, *, stats64: bool = True) -> bytes:
    """The IPVS_CMD_ATTR_DEST payload as ip_vs_genl_fill_dest writes it in a GET_DEST reply."""
    out = [
        _dest_settings(dest),
        nla(DEST_ATTR_ACTIVE_CONNS, _u32(dest.active_conns)),
        nla(DEST_ATTR_INACT_CONNS, _u32(dest.inactive_conns)),
        nla(DEST_ATTR_PERSIST_CONNS, _u32(dest.persist_conns or 0)),
        nla(DEST_ATTR_ADDR_FAMILY, _u16(dest.family)),
        nla(DEST_ATTR_STATS, encode_stats(dest.counters, dest.rates, wide=False)),
    ]
    if stats64:
        out.append(nla(DEST_ATTR_STATS64, encode_stats(dest.counters, dest.rates, wide=True)))
    return b"".join(out)


def done(seq: int, pid: int = 0) -> bytes:
    return _NLH.pack(_NLH.size + 4, NLMSG_DONE, NLM_F_MULTI, seq, pid) + _I32.pack(0)


def error(code: int, request: bytes, pid: int = 0) -> bytes:
    """NLMSG_ERROR answering `request` (code 0 = ack), as the kernel sends it with NETLINK_CAP_ACK off."""
    _len, _type, _flags, seq, _pid = _NLH.unpack_from(request)
    body = _I32.pack(-code) + request[: _NLH.size] if code == 0 else _I32.pack(-code) + request
    return _NLH.pack(_NLH.size + len(body), NLMSG_ERROR, 0, seq, pid) + body
