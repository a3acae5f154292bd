"""lvstop.sources.genl: the family list request and reply, against pyroute2's own codec."""

from __future__ import annotations

from pathlib import Path

import netlink_replies as replies
import pytest
from pyroute2.netlink import CTRL_CMD_GETFAMILY, GENL_ID_CTRL, NLM_F_DUMP, NLM_F_REQUEST, ctrlmsg
from test_wire import families

from lvstop.errors import ParseError
from lvstop.sources import genl, wire

FIXTURES = Path(__file__).parent.parent / "fixtures" / "netlink"
REPLIES = sorted(FIXTURES.glob("*/ctrl_families.bin"))


def test_request_is_what_pyroute2_sends() -> None:
    msg = ctrlmsg()
    msg["cmd"] = CTRL_CMD_GETFAMILY
    msg["version"] = 1
    msg["header"]["type"] = GENL_ID_CTRL
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    msg["header"]["sequence_number"] = 7
    msg.encode()
    assert genl.families_request(7) == bytes(msg.data)


@pytest.mark.parametrize("reply", REPLIES, ids=lambda p: p.parent.name)
def test_every_recorded_family_id_as_pyroute2_reads_it(reply: Path) -> None:
    data = reply.read_bytes()
    expected = families(data)
    assert "IPVS" in expected and len(expected) > 3
    for name, fid in expected.items():
        assert genl.family_id(data, name, "nlctrl") == fid
    assert genl.family_id(data, "NOSUCH", "nlctrl") is None


def test_kernel_error_and_bad_attribute_are_reported() -> None:
    request = genl.families_request(3)
    with pytest.raises(wire.NetlinkError, match="Operation not permitted"):
        genl.family_id(replies.error(1, request), "IPVS", "nlctrl")
    data = REPLIES[0].read_bytes()
    # the first message's first attribute claims more bytes than its message holds
    broken = bytearray(data)
    broken[20:22] = (0xFFF0).to_bytes(2, "little")
    with pytest.raises(ParseError, match="bad length"):
        genl.family_id(bytes(broken), "IPVS", "nlctrl")
