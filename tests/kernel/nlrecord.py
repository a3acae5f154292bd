"""Record the kernel's raw IPVS generic-netlink replies, byte for byte, for the unit tier.

    ip netns exec NS python nlrecord.py OUTDIR

Written independently of lvstop.sources (only the uapi numbers are shared knowledge), so a recording
does not inherit lvstop's mistakes, and lvstop decoding it proves its decoder does not depend on how
the request was phrased. The files and index.json follow tests/fixtures/netlink/README.md: each
request's whole reply (all its datagrams) in <name>.bin, the same requests NetlinkSource makes for a
read (the family list, info, config, daemons, services, one dest dump per service, services again).
"""

from __future__ import annotations

import json
import socket
import struct
import sys
from pathlib import Path

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 3, 1, 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_MULTI = 0x2
# include/uapi/linux/ip_vs.h
GET_SERVICE, GET_DEST, GET_DAEMON, GET_CONFIG, GET_INFO = 4, 8, 11, 13, 15
CMD_ATTR_SERVICE = 1
SVC_ATTR_AF, SVC_ATTR_PROTOCOL, SVC_ATTR_ADDR, SVC_ATTR_PORT, SVC_ATTR_FWMARK = 1, 2, 3, 4, 5
KEY_ATTRS = (SVC_ATTR_AF, SVC_ATTR_PROTOCOL, SVC_ATTR_ADDR, SVC_ATTR_PORT, SVC_ATTR_FWMARK)
IPVS_GENL_VERSION = 1


def nla(atype: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, atype) + payload + b"\0" * (-n % 4)


def attrs(buf: bytes) -> list[tuple[int, bytes]]:
    out, off = [], 0
    while off + 4 <= len(buf):
        n, t = struct.unpack_from("=HH", buf, off)
        out.append((t & 0x3FFF, buf[off + 4 : off + n]))
        off += (n + 3) & ~3
    return out


def messages(data: bytes) -> list[tuple[int, int, bytes]]:
    """(type, flags, payload after nlmsghdr) of each message."""
    out, off = [], 0
    while off + 16 <= len(data):
        n, t, f, _seq, _pid = struct.unpack_from("=IHHII", data, off)
        out.append((t, f, data[off + 16 : off + n]))
        off += (n + 3) & ~3
    return out


class Recorder:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_GENERIC)
        self.sock.settimeout(5)
        self.seq = 0
        self.family = 0
        self.datagrams: dict[bytes, int] = {}

    def request(self, mtype: int, flags: int, cmd: int, payload: bytes = b"", version: int = 1) -> bytes:
        """The whole reply; the boundaries of its datagrams are kept in self.datagrams."""
        self.seq += 1
        body = struct.pack("=BBH", cmd, version, 0) + payload
        self.sock.sendto(struct.pack("=IHHII", 16 + len(body), mtype, flags, self.seq, 0) + body, (0, 0))
        chunks: list[bytes] = []
        while True:
            data = self.sock.recv(1 << 16)
            chunks.append(data)
            msgs = messages(data)
            if any(t in (NLMSG_DONE, NLMSG_ERROR) or not f & NLM_F_MULTI for t, f, _ in msgs):
                self.datagrams[b"".join(chunks)] = len(chunks)
                return b"".join(chunks)

    def families(self) -> bytes:
        """The list of generic netlink families (a dump: a lookup by name would autoload ip_vs)."""
        return self.request(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_DUMP, CTRL_CMD_GETFAMILY)

    def resolve(self, families: bytes | None = None) -> int:
        for t, _f, payload in messages(families if families is not None else self.families()):
            if t == GENL_ID_CTRL:
                a = dict(attrs(payload[4:]))
                if a.get(CTRL_ATTR_FAMILY_NAME, b"").rstrip(b"\0") == b"IPVS":
                    self.family = struct.unpack("=H", a[CTRL_ATTR_FAMILY_ID][:2])[0]
                    return self.family
        raise SystemExit("no IPVS generic netlink family (ip_vs not loaded)")

    def ipvs(self, cmd: int, flags: int, payload: bytes = b"") -> bytes:
        return self.request(self.family, flags, cmd, payload, IPVS_GENL_VERSION)


def service_name(svc_attrs: dict[int, bytes]) -> str:
    """As index.json names services: `TCP 203.0.113.10:80`, `TCP [2001:db8::10]:80`, `FWM 2 IPv6`."""
    af = struct.unpack("=H", svc_attrs[SVC_ATTR_AF][:2])[0]
    if SVC_ATTR_FWMARK in svc_attrs and struct.unpack("=I", svc_attrs[SVC_ATTR_FWMARK][:4])[0]:
        mark = struct.unpack("=I", svc_attrs[SVC_ATTR_FWMARK][:4])[0]
        return f"FWM {mark}" + (" IPv6" if af == socket.AF_INET6 else "")
    proto = {6: "TCP", 17: "UDP", 132: "SCTP"}[struct.unpack("=H", svc_attrs[SVC_ATTR_PROTOCOL][:2])[0]]
    raw = svc_attrs[SVC_ATTR_ADDR]
    port = struct.unpack("!H", svc_attrs[SVC_ATTR_PORT][:2])[0]
    if af == socket.AF_INET6:
        return f"{proto} [{socket.inet_ntop(socket.AF_INET6, raw[:16])}]:{port}"
    return f"{proto} {socket.inet_ntop(socket.AF_INET, raw[:4])}:{port}"


def record(out: Path) -> dict[str, object]:
    out.mkdir(parents=True, exist_ok=True)
    r = Recorder()
    files = {"ctrl_families": r.families()}
    index: dict[str, object] = {"family_id": r.resolve(files["ctrl_families"])}
    files |= {
        "info": r.ipvs(GET_INFO, NLM_F_REQUEST),
        "config": r.ipvs(GET_CONFIG, NLM_F_REQUEST),
        "daemons": r.ipvs(GET_DAEMON, NLM_F_REQUEST | NLM_F_DUMP),
        "services": r.ipvs(GET_SERVICE, NLM_F_REQUEST | NLM_F_DUMP),
    }
    services: list[dict[str, object]] = []
    for t, _f, payload in messages(files["services"]):
        if t != r.family:
            continue
        (svc,) = [v for a, v in attrs(payload[4:]) if a == CMD_ATTR_SERVICE]
        sa = dict(attrs(svc))
        key = b"".join(nla(a, sa[a]) for a in KEY_ATTRS if a in sa)
        name = f"dests-{len(services):02d}"
        files[name] = r.ipvs(GET_DEST, NLM_F_REQUEST | NLM_F_DUMP, nla(CMD_ATTR_SERVICE | 0x8000, key))
        datagrams = r.datagrams[files[name]]
        services.append({"service": service_name(sa), "dests": f"{name}.bin", "datagrams": datagrams})
    files["services-recheck"] = r.ipvs(GET_SERVICE, NLM_F_REQUEST | NLM_F_DUMP)
    index["services"] = services
    for name, data in files.items():
        (out / f"{name}.bin").write_bytes(data)
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return index


if __name__ == "__main__":
    print(json.dumps(record(Path(sys.argv[1]))))
