"""The generic netlink controller (nlctrl): the id the kernel gave the IPVS family.

Written by hand (one request, one attribute walk) so that reading IPVS never imports pyroute2,
whose import alone costs more than a whole `lvstop list` of a small table (3.7 s under TCG).
"""

from __future__ import annotations

import struct
from typing import Final

from lvstop.errors import ParseError
from lvstop.sources import wire

GENL_ID_CTRL: Final = 0x10
CTRL_CMD_NEWFAMILY: Final = 1  # what the kernel answers GETFAMILY with
CTRL_CMD_GETFAMILY: Final = 3
CTRL_VERSION: Final = 1
CTRL_ATTR_FAMILY_ID: Final = 1
CTRL_ATTR_FAMILY_NAME: Final = 2

_NLH = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_GENL = struct.Struct("=BBH")  # genlmsghdr: cmd, version, reserved
_NLA = struct.Struct("=HH")  # nlattr: len, type
_NLA_TYPE_MASK: Final = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER


def families_request(seq: int) -> bytes:
    """CTRL_CMD_GETFAMILY as a dump: every registered family, so that no name is looked up (a lookup
    of a name the kernel does not know runs request_module() for it, which loads ip_vs)."""
    body = _GENL.pack(CTRL_CMD_GETFAMILY, CTRL_VERSION, 0)
    flags = wire.NLM_F_REQUEST | wire.NLM_F_DUMP
    return _NLH.pack(_NLH.size + len(body), GENL_ID_CTRL, flags, seq, 0) + body


def _attrs(msg: bytes, what: str) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    off = _NLH.size + _GENL.size
    if len(msg) < off:
        raise ParseError("truncated generic netlink header", source=what)
    while len(msg) - off >= _NLA.size:
        alen, atype = _NLA.unpack_from(msg, off)
        if alen < _NLA.size or alen > len(msg) - off:
            raise ParseError(f"attribute {atype & _NLA_TYPE_MASK} has bad length {alen}", source=what)
        out[atype & _NLA_TYPE_MASK] = msg[off + _NLA.size : off + alen]
        off += (alen + 3) & ~3
    return out


def family_id(reply: bytes, name: str, what: str) -> int | None:
    """The id of family `name` in a GETFAMILY dump reply; None when the kernel has no such family.
    Raises ParseError on a malformed reply and the kernel's error if it sent one."""
    wire.raise_for_error(reply, what)
    wanted = name.encode()
    for mtype, msg in wire.messages(reply, what):
        if mtype != GENL_ID_CTRL:
            continue
        attrs = _attrs(msg, what)
        if attrs.get(CTRL_ATTR_FAMILY_NAME, b"").rstrip(b"\0") == wanted:
            fid = attrs.get(CTRL_ATTR_FAMILY_ID)
            if fid is None or len(fid) < 2:
                raise ParseError(f"family {name} without a valid id", source=what)
            family: int = struct.unpack("=H", fid[:2])[0]
            return family
    return None
