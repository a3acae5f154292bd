"""Malformed inputs found by fuzzing get lvstop's own errors, with the place, never a Python exception.

Snapshots arrive from replay files and from another director's exporter (--connect); netlink replies,
/proc text and the connection table from the kernel (or whatever stands in for it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import netlink_replies as replies
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_codec import _golden_dict

from lvstop import codec
from lvstop.conntable import ConnTable
from lvstop.errors import LvstopError, ParseError
from lvstop.model import AF_INET6
from lvstop.sources import wire
from lvstop.sources.procfs import parse_ip_vs_stats

SAMPLE = Path(__file__).resolve().parent.parent / "fixtures" / "proc" / "sample-6.1" / "net"


def _with(path: tuple[str | int, ...], value: Any) -> str:
    d = _golden_dict()
    at: Any = d
    for p in path[:-1]:
        at = at[p]
    at[path[-1]] = value
    return json.dumps(d)


DEST = ("services", 0, "dests", 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"schema": 1, "wall_time": ' + "7" * 5000 + "}", "invalid JSON"),
        (_with(("wall_time",), 10**400), "wall_time: expected a finite number"),
        (_with((*DEST, "address"), "not-an-ip"), "services[0].dests[0].address: not an IP address"),
        (_with((*DEST, "address"), "192.0.2.300"), "services[0].dests[0].address: not an IP address"),
        (_with((*DEST, "family"), "inet6"), "does not match family inet6"),
        (_with((*DEST, "tun_type"), 7), "services[0].dests[0].tun_type: expected one of"),
    ],
)
def test_codec_loads_refuses_with_the_place(text: str, message: str) -> None:
    with pytest.raises(ParseError) as e:
        codec.loads(text)
    assert message in str(e.value)


def test_dest_addresses_come_back_canonical() -> None:
    d = json.loads(_with((*DEST, "address"), "2001:DB8:0:0::1"))
    d["services"][0]["dests"][0]["family"] = "inet6"
    dest = codec.snapshot_from_dict(d).services[0].dests[0]
    assert (dest.family, dest.address) == (AF_INET6, "2001:db8::1")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(_golden_dict())


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(st.sampled_from(PATHS), json_values, st.integers(1, 3))
def test_any_value_anywhere_is_a_snapshot_or_a_parse_error(
    path: tuple[Any, ...], value: Any, big: int
) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        value *= 10 ** (100 * big)  # past float range and past int-to-str limits too
    try:
        text = _with(path, value)
    except ValueError:  # json.dumps refuses its own huge ints: the reader sees them as text below
        text = _with(path, 0).replace(": 0", ": " + "9" * 5000, 1)
    try:
        snap = codec.loads(text)
    except ParseError:
        return
    for svc in snap.services:
        for d in svc.dests:
            assert codec.dest_key_from_dict(codec.dest_key_to_dict(d.key)) == d.key  # IPs, canonical


def test_a_netlink_error_code_that_is_no_errno_is_malformed() -> None:
    request = wire.get_services_request(30, 7)
    for code in (2**31, -5):  # INT_MIN on the wire, and a positive "error"
        with pytest.raises(ParseError, match="is not a negative errno"):
            wire.ack(replies.error(code, request), "GET_SERVICE")
    with pytest.raises(LvstopError, match="ENOENT"):
        wire.ack(replies.error(2, request), "GET_SERVICE")


def test_ip_vs_stats_values_past_64_bits_are_malformed() -> None:
    lines = (SAMPLE / "ip_vs_stats").read_text().splitlines()
    lines[5] = "       9       30       2E              C65 " + "F" * 400
    with pytest.raises(ParseError) as e:
        parse_ip_vs_stats("\n".join(lines), source="ip_vs_stats")
    assert "64 bits" in str(e.value) and str(e.value).startswith("ip_vs_stats:6: ")


def test_an_unknown_origin_is_malformed_in_the_exporters_mode_as_in_the_tuis() -> None:
    lines = (SAMPLE / "ip_vs_conn_sync").read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace("LOCAL", "BOGUS")
    with pytest.raises(ParseError) as e:
        ConnTable((), detail=False).summarize(lines, sync=True, budget_s=None, filters=None)
    assert "unknown origin 'BOGUS'" in str(e.value) and str(e.value).startswith(
        "/proc/net/ip_vs_conn_sync:3: "
    )
