"""Snapshot JSON: exact round trips, a golden file, and clear errors for bad input.

Regenerate the golden file after an intended schema change with LVSTOP_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvstop import codec
from lvstop.errors import ParseError
from lvstop.model import (
    AF_INET,
    AF_INET6,
    SVC_F_PERSISTENT,
    Counters,
    Daemon,
    DaemonState,
    Dest,
    FwdMethod,
    Issue,
    IssueKind,
    Protocol,
    Rates,
    Service,
    ServiceKey,
    Snapshot,
    Timeouts,
    TunType,
)

GOLDEN = Path(__file__).parent.parent / "fixtures" / "codec" / "small.json"

u64 = st.integers(0, (1 << 64) - 1)
small = st.integers(0, 1 << 31)
finite = st.floats(allow_nan=False, allow_infinity=False)
number = st.one_of(st.integers(0, 1 << 53), finite)
text = st.text(max_size=12)


@st.composite
def service_keys(draw: st.DrawFn) -> ServiceKey:
    family = draw(st.sampled_from((AF_INET, AF_INET6)))
    if draw(st.booleans()):
        return ServiceKey.mark(draw(st.integers(1, (1 << 32) - 1)), family)
    addr = draw(st.ip_addresses(v=4 if family == AF_INET else 6))
    proto = draw(st.sampled_from((Protocol.TCP, Protocol.UDP, Protocol.SCTP)))
    return ServiceKey(family, proto, str(addr), draw(st.integers(0, 65535)))


counters = st.builds(Counters, u64, u64, u64, u64, u64)
rates = st.builds(Rates, number, number, number, number, number)


@st.composite
def dests(draw: st.DrawFn) -> Dest:
    family = draw(st.sampled_from((AF_INET, AF_INET6)))
    return Dest(
        family,
        str(draw(st.ip_addresses(v=4 if family == AF_INET else 6))),
        draw(st.integers(0, 65535)),
        draw(st.sampled_from(list(FwdMethod))),
        draw(small),
        draw(st.one_of(st.none(), small)),
        draw(st.one_of(st.none(), small)),
        draw(small),
        draw(small),
        draw(st.one_of(st.none(), small)),
        draw(st.one_of(st.none(), st.sampled_from(list(TunType)))),
        draw(st.one_of(st.none(), st.integers(0, 65535))),
        draw(st.one_of(st.none(), st.integers(0, 3))),
        draw(st.one_of(st.none(), counters)),
        draw(st.one_of(st.none(), rates)),
        draw(st.one_of(st.none(), rates)),
    )


services = st.builds(
    Service,
    service_keys(),
    st.sampled_from(("rr", "wlc", "mh", "sh")),
    st.integers(0, 0x3F),
    small,
    st.integers(0, (1 << 32) - 1),
    st.sampled_from(("", "sip")),
    st.one_of(st.none(), counters),
    st.one_of(st.none(), rates),
    st.one_of(st.none(), rates),
    st.lists(dests(), max_size=3).map(tuple),
    st.one_of(st.none(), text),
)
daemons = st.builds(
    Daemon,
    st.sampled_from(list(DaemonState)),
    text,
    small,
    st.one_of(st.none(), small),
    st.one_of(st.none(), text),
    st.one_of(st.none(), text),
    st.one_of(st.none(), st.integers(0, 65535)),
    st.one_of(st.none(), st.integers(0, 255)),
)
snapshots = st.builds(
    Snapshot,
    st.sampled_from(("netlink", "proc", "demo", "replay", "remote")),
    text,
    finite,
    finite,
    st.lists(services, max_size=3).map(tuple),
    st.one_of(st.none(), text),
    st.one_of(st.none(), small),
    st.one_of(st.none(), counters),
    st.one_of(st.none(), rates),
    st.one_of(st.none(), rates),
    st.one_of(st.none(), st.lists(daemons, max_size=2).map(tuple)),
    st.one_of(st.none(), st.builds(Timeouts, small, small, small)),
    st.dictionaries(text, st.integers(-(1 << 31), 1 << 31), max_size=4).map(MappingProxyType),
    st.lists(
        st.builds(Issue, st.sampled_from(list(IssueKind)), text, st.one_of(st.none(), service_keys())),
        max_size=2,
    ).map(tuple),
    st.one_of(st.none(), finite),
    st.integers(0, 1 << 40),
)


@settings(max_examples=150)
@given(snapshots)
def test_random_snapshots_round_trip_exactly(s: Snapshot) -> None:
    text = codec.dumps(s)
    back = codec.loads(text)
    assert back == s
    assert codec.snapshot_from_dict(codec.snapshot_to_dict(s)) == s
    # == says 1 == 1.0; the text says whether an int came back as an int
    assert codec.dumps(back) == text
    assert "\n" not in text  # one snapshot per line in recordings


def golden_snapshot() -> Snapshot:
    web = ServiceKey.tcp("203.0.113.10", 443)
    return Snapshot(
        "demo",
        "demo-director",
        1700000000.25,
        5321.5,
        services=(
            Service(
                web,
                "wlc",
                flags=SVC_F_PERSISTENT,
                timeout=300,
                netmask=0xFFFFFF00,
                counters=Counters(1200, 9000, 8800, 700_000, 12_000_000),
                rates=Rates(3, 22, 21, 1800, 31000),
                instant=Rates(3.5, 22.0, 21.5, 1750.0, 30999.5),
                dests=(
                    Dest(
                        AF_INET,
                        "192.0.2.11",
                        8443,
                        FwdMethod.MASQ,
                        100,
                        u_threshold=200,
                        l_threshold=150,
                        active_conns=12,
                        inactive_conns=340,
                        persist_conns=7,
                        counters=Counters(1200, 9000, 8800, 700_000, 12_000_000),
                        rates=Rates(3, 22, 21, 1800, 31000),
                    ),
                ),
            ),
            Service(
                ServiceKey.mark(2, AF_INET6),
                "mh",
                flags=0x18,
                netmask=128,
                dests=(
                    Dest(
                        AF_INET6,
                        "2001:db8:1::81",
                        0,
                        FwdMethod.TUNNEL,
                        2,
                        persist_conns=None,
                        tun_type=TunType.GUE,
                        tun_port=6080,
                        tun_flags=1,
                    ),
                ),
                error="dests changed during the dump",
            ),
        ),
        version="1.2.1",
        conn_tab_size=4096,
        totals=Counters(1200, 9000, 8800, 700_000, 12_000_000),
        total_rates=Rates(3, 22, 21, 1800, 31000),
        daemons=(Daemon(DaemonState.MASTER, "eth1", 7, 1472, "224.0.0.81", None, 8848, 1),),
        timeouts=Timeouts(900, 120, 300),
        sysctls=MappingProxyType({"expire_nodest_conn": 0, "conn_reuse_mode": 1}),
        issues=(
            Issue(IssueKind.INCONSISTENT, "dests changed during the dump", ServiceKey.mark(2, AF_INET6)),
        ),
        poll_duration=0.0125,
        seq=42,
        est_cpulist="0-1",
    )


def test_golden_file() -> None:
    s = golden_snapshot()
    text = codec.dumps(s, indent=2) + "\n"
    if os.environ.get("LVSTOP_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
    assert GOLDEN.read_text() == text
    assert codec.loads(GOLDEN.read_text()) == s


def test_schema_spells_keys_and_enums_as_documented() -> None:
    d = codec.snapshot_to_dict(golden_snapshot())
    assert d["schema"] == codec.SCHEMA_VERSION == 1
    assert d["services"][0]["key"] == {
        "family": "inet",
        "protocol": "tcp",
        "address": "203.0.113.10",
        "port": 443,
        "fwmark": 0,
    }
    assert d["services"][1]["key"]["protocol"] is None and d["services"][1]["key"]["family"] == "inet6"
    dest = d["services"][1]["dests"][0]
    assert (dest["fwd"], dest["tun_type"], dest["persist_conns"]) == ("tunnel", "gue", None)
    assert d["daemons"][0]["state"] == "master" and d["issues"][0]["kind"] == "inconsistent"
    assert codec.__doc__ is not None
    block = codec.__doc__.split("Snapshot (object)")[1].split("ServiceKey (object)")[0]
    documented = {line.split()[0] for line in block.splitlines() if line.strip()}
    assert documented == set(d)  # the docstring documents exactly the keys written


def _golden_dict() -> dict[str, Any]:
    return codec.snapshot_to_dict(golden_snapshot())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("director"), "director: missing"),
        (lambda d: d.update(seq=True), "seq: expected an integer, got a boolean"),
        (lambda d: d.update(wall_time="now"), "wall_time: expected a finite number, got the string 'now'"),
        (
            lambda d: d["services"][0]["dests"][0].update(weight=1.5),
            "services[0].dests[0].weight: expected an integer",
        ),
        (
            lambda d: d["services"][0]["dests"][0].update(fwd="nat"),
            "services[0].dests[0].fwd: expected one of masq",
        ),
        (
            lambda d: d["services"][0]["key"].update(family="ipx"),
            'services[0].key.family: expected "inet" or "inet6"',
        ),
        (lambda d: d["services"][0]["key"].update(protocol="icmp"), "services[0].key.protocol: expected"),
        (lambda d: d["services"][0].update(key=None), "services[0].key: expected an object, got null"),
        (
            lambda d: d["services"][0]["key"].update(address="nope"),
            "services[0].key.address: not an IP address: 'nope'",
        ),
        (
            lambda d: d["services"][0]["key"].update(port=70000),
            "services[0].key.port: expected an integer 0..65535, got the number 70000",
        ),
        (lambda d: d.update(services={}), "services: expected a list, got an object"),
        (lambda d: d["sysctls"].update(backup_only="0"), "sysctls.backup_only: expected an integer"),
        (lambda d: d["totals"].pop("conns"), "totals.conns: missing"),
        (lambda d: d.update(schema=2), "schema 2 is newer than this lvstop understands (1)"),
    ],
)
def test_bad_input_names_the_offending_path(mutate: Any, message: str) -> None:
    d = _golden_dict()
    mutate(d)
    with pytest.raises(ParseError) as e:
        codec.snapshot_from_dict(d)
    assert message in str(e.value)


def test_service_key_addresses_are_normalised_like_the_sources_do() -> None:
    d = _golden_dict()
    key = d["services"][0]["key"]
    key.update(family="inet6", address="2001:DB8:0:0::10")
    assert codec.snapshot_from_dict(d).services[0].key.address == "2001:db8::10"


def test_keys_from_users_and_from_snapshots_are_parsed_alike() -> None:
    from lvstop import control

    assert control.service_key_from_dict is codec.service_key_from_dict
    assert control.dest_key_from_dict is codec.dest_key_from_dict
    assert codec.dest_key_from_dict({"address": "2001:DB8::1", "port": 80}).address == "2001:db8::1"
    with pytest.raises(ValueError, match=r"^dest\.address: 192\.0\.2\.1 does not match family inet6$"):
        codec.dest_key_from_dict({"family": "inet6", "address": "192.0.2.1", "port": 80})
    with pytest.raises(ValueError, match=r"^service\.protocol: expected .* got nothing$"):
        codec.service_key_from_dict({"address": "192.0.2.1", "port": 80})


def test_not_an_object() -> None:
    with pytest.raises(ParseError, match="snapshot: expected an object, got a list"):
        codec.loads("[1, 2]")


def test_json_syntax_error_carries_the_line() -> None:
    with pytest.raises(ParseError) as e:
        codec.loads('{\n  "schema": 1,\n  "source": oops\n}')
    assert e.value.line == 3 and "invalid JSON" in str(e.value)


def test_non_finite_numbers_are_refused_both_ways() -> None:
    s = golden_snapshot()
    d = _golden_dict()
    d["wall_time"] = float("nan")
    with pytest.raises(ParseError, match="wall_time: expected a finite number"):
        codec.snapshot_from_dict(d)
    with pytest.raises(ValueError):
        codec.dumps(Snapshot(s.source, s.director, float("inf"), 0.0))


def test_unknown_keys_are_ignored_and_defaults_fill_missing_optional_ones() -> None:
    d = _golden_dict()
    d["future_field"] = {"anything": 1}
    dest = d["services"][0]["dests"][0]
    for k in ("u_threshold", "tun_type", "rates", "instant"):
        dest.pop(k)
    back = codec.snapshot_from_dict(d)
    got = back.services[0].dests[0]
    assert (got.u_threshold, got.tun_type, got.rates, got.instant) == (0, TunType.IPIP, None, None)
    assert json.loads(codec.dumps(back))["services"][0]["dests"][0]["u_threshold"] == 0


def test_what_proc_cannot_see_is_null_not_zero() -> None:
    from lvstop.sources.procfs import ProcSource

    sample = Path(__file__).parent.parent / "fixtures" / "proc" / "sample-6.1"
    snap = ProcSource(str(sample), hz=250).read()
    d = json.loads(codec.dumps(snap))
    assert d["daemons"] is None and d["timeouts"] is None
    tunnel = [x for s in d["services"] for x in s["dests"] if x["fwd"] == "tunnel"]
    assert tunnel
    for dest in tunnel:
        unseen = ("u_threshold", "l_threshold", "persist_conns", "tun_type", "tun_port", "tun_flags")
        assert {k: dest[k] for k in unseen} == dict.fromkeys(unseen)
    assert codec.loads(codec.dumps(snap)) == snap
