"""Record the kernel's raw IPVS generic-netlink replies, byte for byte, for the unit tier.

    ip netns exec NS python nlrecord.py OUTDIR

Written independently of lvstop.sources.wire (only the uapi numbers are shared knowledge), so the
recording does not inherit lvstop's mistakes. Each request's whole reply (all datagrams, in order,
up to and including NLMSG_DONE or the single doit reply) is written to OUTDIR/<name>.bin, and
OUTDIR/index.json describes them: the IPVS family id of this kernel, and for each dest dump the
service it belongs to.
"""

from __future__ import annotations

import json
import platform
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

    def request(self, mtype: int, flags: int, cmd: int, payload: bytes = b"", version: int = 1) -> bytes:
        self.seq += 1
        body = struct.pack("=BBH", cmd, version, 0) + payload
        self.sock.sendto(struct.pack("=IHHII", 16 + len(body), mtype, flags, self.seq, 0) + body, (0, 0))
        chunks: list[bytes] = []
        while True:
            data = self.sock.recv(1 << 16)
            chunks.append(data)
            msgs = messages(data)
            if any(t in (NLMSG_DONE, NLMSG_ERROR) or not f & NLM_F_MULTI for t, f, _ in msgs):
                return b"".join(chunks)

    def resolve(self) -> int:
        reply = self.request(
            GENL_ID_CTRL, NLM_F_REQUEST, CTRL_CMD_GETFAMILY, nla(CTRL_ATTR_FAMILY_NAME, b"IPVS\0")
        )
        for t, _f, payload in messages(reply):
            if t == GENL_ID_CTRL:
                for a, v in attrs(payload[4:]):
                    if a == CTRL_ATTR_FAMILY_ID:
                        self.family = struct.unpack("=H", v[:2])[0]
                        return self.family
        raise SystemExit("no IPVS generic netlink family (ip_vs not loaded?)")

    def ipvs(self, cmd: int, flags: int, payload: bytes = b"") -> bytes:
        return self.request(self.family, flags, cmd, payload, IPVS_GENL_VERSION)


def service_name(svc_attrs: dict[int, bytes]) -> str:
    af = struct.unpack("=H", svc_attrs[SVC_ATTR_AF][:2])[0]
    if SVC_ATTR_FWMARK in svc_attrs and struct.unpack("=I", svc_attrs[SVC_ATTR_FWMARK][:4])[0]:
        mark = struct.unpack("=I", svc_attrs[SVC_ATTR_FWMARK][:4])[0]
        return f"FWM  {mark}" + (" IPv6" if af == socket.AF_INET6 else "")
    proto = {6: "TCP", 17: "UDP", 132: "SCTP"}[struct.unpack("=H", svc_attrs[SVC_ATTR_PROTOCOL][:2])[0]]
    raw = svc_attrs[SVC_ATTR_ADDR]
    port = struct.unpack("!H", svc_attrs[SVC_ATTR_PORT][:2])[0]
    if af == socket.AF_INET6:
        return f"{proto:<4} [{socket.inet_ntop(socket.AF_INET6, raw[:16])}]:{port}"
    return f"{proto:<4} {socket.inet_ntop(socket.AF_INET, raw[:4])}:{port}"


def record(out: Path) -> dict[str, object]:
    out.mkdir(parents=True, exist_ok=True)
    r = Recorder()
    index: dict[str, object] = {"kernel": platform.release(), "family_id": r.resolve(), "dests": {}}
    files = {
        "info": r.ipvs(GET_INFO, NLM_F_REQUEST),
        "config": r.ipvs(GET_CONFIG, NLM_F_REQUEST),
        "daemons": r.ipvs(GET_DAEMON, NLM_F_REQUEST | NLM_F_DUMP),
        "services": r.ipvs(GET_SERVICE, NLM_F_REQUEST | NLM_F_DUMP),
    }
    dests: dict[str, str] = {}
    for t, _f, payload in messages(files["services"]):
        if t != r.family:
            continue
        (svc,) = [v for a, v in attrs(payload[4:]) if a == CMD_ATTR_SERVICE]
        sa = dict(attrs(svc))
        key = b"".join(nla(a, sa[a]) for a in KEY_ATTRS if a in sa)
        name = f"dests-{len(dests):02d}"
        files[name] = r.ipvs(GET_DEST, NLM_F_REQUEST | NLM_F_DUMP, nla(CMD_ATTR_SERVICE | 0x8000, key))
        dests[name] = service_name(sa)
    index["dests"] = dests
    for name, data in files.items():
        (out / f"{name}.bin").write_bytes(data)
    (out / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return index


if __name__ == "__main__":
    print(json.dumps(record(Path(sys.argv[1]))))
