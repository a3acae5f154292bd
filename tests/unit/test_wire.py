"""lvstop.sources.wire: recorded kernel replies vs ipvsadm, encode/decode round trips, bad input."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import re
import struct
from pathlib import Path

import netlink_replies as replies
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroute2.netlink import ctrlmsg

from lvstop.errors import ParseError, SourceError
from lvstop.model import (
    AF_INET,
    AF_INET6,
    TUN_F_CSUM,
    TUN_F_REMCSUM,
    Counters,
    DaemonState,
    Dest,
    DestKey,
    FwdMethod,
    IssueKind,
    Protocol,
    Rates,
    Service,
    ServiceKey,
    TunType,
    normalize_address,
)
from lvstop.sources import wire

FIXTURES = Path(__file__).parent.parent / "fixtures" / "netlink"
FAM = 0x1F  # any family id: decoders take it as a parameter
GENL_ID_CTRL = 16


def family_of(folder: Path) -> int:
    """The IPVS family id the recorded kernel assigned, from its recorded list of genl families."""
    ids = families((folder / "ctrl_families.bin").read_bytes())
    return ids["IPVS"]


def families(reply: bytes) -> dict[str, int]:
    out = {}
    for mtype, body in wire.messages(reply, "nlctrl"):
        if mtype == GENL_ID_CTRL:
            m = ctrlmsg(body)
            m.decode()
            out[m.get_attr("CTRL_ATTR_FAMILY_NAME")] = m.get_attr("CTRL_ATTR_FAMILY_ID")
    return out


def recorded(folder: str) -> tuple[int, list[Service], dict[ServiceKey, str]]:
    d = FIXTURES / folder
    fam = family_of(d)
    services = wire.decode_services((d / "services.bin").read_bytes(), fam)
    index = json.loads((d / "index.json").read_text())["services"]
    files = {s.key: entry["dests"] for s, entry in zip(services, index, strict=True)}
    assert [str(s.key) for s in services] == [e["service"] for e in index]
    return fam, services, files


def with_dests(folder: str, *, fast: bool = True) -> list[Service]:
    fam, services, files = recorded(folder)
    d = FIXTURES / folder
    return [
        dataclasses.replace(
            s, dests=tuple(wire.decode_dests((d / files[s.key]).read_bytes(), fam, s.key.family, fast=fast))
        )
        for s in services
    ]


# --------------------------------------------------------------------------- ipvsadm text, parsed


def ipvsadm_key(proto: str, where: str) -> ServiceKey:
    if proto == "FWM":
        fwmark, *v6 = where.split()
        return ServiceKey.mark(int(fwmark), AF_INET6 if v6 else AF_INET)
    host, port = where.rsplit(":", 1)
    fam = AF_INET6 if host.startswith("[") else AF_INET
    address = normalize_address(fam, host.strip("[]"))
    return ServiceKey(fam, Protocol[proto], address, int(port))


def ipvsadm_dest(where: str) -> DestKey:
    host, port = where.rsplit(":", 1)
    fam = AF_INET6 if host.startswith("[") else AF_INET
    return DestKey(fam, normalize_address(fam, host.strip("[]")), int(port))


_SVC_RE = re.compile(r"^(TCP|UDP|SCTP|FWM) +(\S+(?: IPv6)?)\s+(.*)$")
_DEST_RE = re.compile(r"^  -> (\S+)\s+(.*)$")


def ipvsadm_table(text: str) -> dict[ServiceKey, tuple[list[str], dict[DestKey, list[str]]]]:
    """{service: (its columns, {dest: its columns})} of an `ipvsadm -Ln ...` listing."""
    out: dict[ServiceKey, tuple[list[str], dict[DestKey, list[str]]]] = {}
    current: dict[DestKey, list[str]] = {}
    for line in text.splitlines()[3:]:
        if m := _SVC_RE.match(line):
            current = {}
            out[ipvsadm_key(m.group(1), m.group(2))] = (m.group(3).split(), current)
        elif m := _DEST_RE.match(line):
            current[ipvsadm_dest(m.group(1))] = m.group(2).split()
        else:
            raise AssertionError(f"unexpected ipvsadm line {line!r}")
    return out


def counters_cols(c: Counters | None) -> list[str]:
    assert c is not None
    return [str(v) for v in (c.conns, c.inpkts, c.outpkts, c.inbytes, c.outbytes)]


def rates_cols(r: Rates | None) -> list[str]:
    assert r is not None
    return [str(int(v)) for v in (r.cps, r.inpps, r.outpps, r.inbps, r.outbps)]


# 6.1's recordings, then 6.12's (the same scenario, recorded by the kernel tier on bookworm-backports' kernel)
FOLDERS = ["main", "mixed", "../netlink-6.12/main", "../netlink-6.12/mixed"]


def folder_id(folder: str) -> str:
    return folder.replace("../netlink-", "").replace("/", "-") if "6.12" in folder else f"6.1-{folder}"


@pytest.mark.parametrize("folder", FOLDERS, ids=folder_id)
class TestRecordedReplies:
    """Decoded kernel replies equal what ipvsadm printed in the same instant."""

    def text(self, folder: str, name: str) -> str:
        return (FIXTURES / folder / name).read_text()

    def test_service_and_dest_set(self, folder: str) -> None:
        services = with_dests(folder)
        table = ipvsadm_table(self.text(folder, "ipvsadm-Ln.txt"))
        assert {s.key for s in services} == set(table)
        for s in services:
            assert {d.key for d in s.dests} == set(table[s.key][1]), s.key

    def test_scheduler_flags_persistence(self, folder: str) -> None:
        for s in with_dests(folder):
            cols = self.table(folder, "ipvsadm-Ln.txt")[s.key][0]
            expected = [s.scheduler]
            if s.sched_flags():
                expected.append(f"({','.join(s.sched_flags())})")
            if s.persistent:
                expected += ["persistent", str(s.timeout)]
                if s.key.family == AF_INET and s.netmask != 0xFFFFFFFF:
                    expected += ["mask", ".".join(str(b) for b in s.netmask.to_bytes(4, "big"))]
                elif s.key.family == AF_INET6 and s.netmask != 128:
                    expected += ["mask", str(s.netmask)]
                if s.pe_name:
                    expected += ["pe", s.pe_name]
            if s.one_packet:
                expected.append("ops")
            assert cols == expected, s.key

    def table(self, folder: str, name: str) -> dict[ServiceKey, tuple[list[str], dict[DestKey, list[str]]]]:
        return ipvsadm_table(self.text(folder, name))

    def test_dest_settings_and_connections(self, folder: str) -> None:
        table = self.table(folder, "ipvsadm-Ln.txt")
        for s in with_dests(folder):
            for d in s.dests:
                assert table[s.key][1][d.key] == [
                    d.fwd.label,
                    str(d.weight),
                    str(d.active_conns),
                    str(d.inactive_conns),
                ], (s.key, d.key)

    def test_counters(self, folder: str) -> None:
        table = self.table(folder, "ipvsadm-stats-exact.txt")
        for s in with_dests(folder):
            assert table[s.key][0] == counters_cols(s.counters), s.key
            for d in s.dests:
                assert table[s.key][1][d.key] == counters_cols(d.counters), (s.key, d.key)

    def test_rates(self, folder: str) -> None:
        table = self.table(folder, "ipvsadm-rate-exact.txt")
        for s in with_dests(folder):
            assert table[s.key][0] == rates_cols(s.rates), s.key
            for d in s.dests:
                assert table[s.key][1][d.key] == rates_cols(d.rates), (s.key, d.key)

    def test_thresholds_and_persistent_conns(self, folder: str) -> None:
        # columns: Uthreshold Lthreshold ActiveConn InActConn, and Weight PersistConn ActiveConn InActConn
        thresholds = self.table(folder, "ipvsadm-thresholds.txt")
        persistent = self.table(folder, "ipvsadm-persistent-conn.txt")
        for s in with_dests(folder):
            for d in s.dests:
                assert thresholds[s.key][1][d.key] == [
                    str(d.u_threshold),
                    str(d.l_threshold),
                    str(d.active_conns),
                    str(d.inactive_conns),
                ], (s.key, d.key)
                assert persistent[s.key][1][d.key][:2] == [str(d.weight), str(d.persist_conns)], (
                    s.key,
                    d.key,
                )

    def test_tunnel_info(self, folder: str) -> None:
        table = self.table(folder, "ipvsadm-tun-info.txt")  # Forward TunnelInfo Weight ActiveConn InActConn
        flags = {0: "-c", TUN_F_CSUM: "+c", TUN_F_REMCSUM: "r+c"}  # ipvsadm's tunflags[]
        for s in with_dests(folder):
            for d in s.dests:
                if d.fwd is not FwdMethod.TUNNEL:
                    info = "n/a"
                elif d.tun_type is TunType.GUE:
                    info = f"gue:{d.tun_port}:{flags[d.tun_flags or 0]}"
                elif d.tun_type is TunType.GRE:
                    info = f"gre:{flags[d.tun_flags or 0]}"
                else:
                    info = "ipip"
                assert table[s.key][1][d.key][:3] == [d.fwd.label, info, str(d.weight)], (s.key, d.key)

    def test_fast_path_equals_reference_path(self, folder: str) -> None:
        assert with_dests(folder, fast=True) == with_dests(folder, fast=False)

    def test_dest_family_is_the_dests_own(self, folder: str) -> None:
        for s in with_dests(folder):
            for d in s.dests:
                assert d.family == (AF_INET6 if ":" in d.address else AF_INET)

    def test_timeouts(self, folder: str) -> None:
        fam = family_of(FIXTURES / folder)
        t = wire.decode_config((FIXTURES / folder / "config.bin").read_bytes(), fam)
        assert (
            self.text(folder, "ipvsadm-timeout.txt")
            == f"Timeout (tcp tcpfin udp): {t.tcp} {t.tcpfin} {t.udp}\n"
        )

    def test_info(self, folder: str) -> None:
        fam = family_of(FIXTURES / folder)
        version, size = wire.decode_info((FIXTURES / folder / "info.bin").read_bytes(), fam)
        first = self.text(folder, "ipvsadm-Ln.txt").splitlines()[0]
        assert first == f"IP Virtual Server version {version} (size={size})"

    def test_daemons(self, folder: str) -> None:
        fam = family_of(FIXTURES / folder)
        daemons = wire.decode_daemons((FIXTURES / folder / "daemons.bin").read_bytes(), fam)
        lines = [
            f"{d.state.name.lower()} sync daemon (mcast={d.mcast_ifn}, syncid={d.syncid}, maxlen={d.maxlen}, "
            f"group={d.group}, port={d.port}, ttl={d.ttl})"
            for d in daemons
        ]
        assert self.text(folder, "ipvsadm-daemon.txt").splitlines() == lines


def test_recorded_main_covers_the_interesting_cases() -> None:
    """The fixture set exercises what the comparisons above are meant to check."""
    services = with_dests("main")
    dests = [d for s in services for d in s.dests]
    assert any(s.key.family == AF_INET6 and not s.key.is_fwmark for s in services)
    assert any(s.key.is_fwmark and s.key.family == AF_INET6 for s in services)
    assert any(s.pe_name == "sip" for s in services) and any(s.one_packet for s in services)
    assert {d.tun_type for d in dests} == set(TunType)
    assert any(d.u_threshold for d in dests) and any(d.l_threshold for d in dests)
    assert any(d.persist_conns for d in dests) and any(d.active_conns for d in dests)
    assert all(s.counters is not None and s.counters.conns for s in services if s.key.port in (80, 81))
    assert any(s.rates is not None and s.rates.inbps for s in services)
    mixed = with_dests("mixed")
    assert any(d.family != s.key.family for s in mixed for d in s.dests)
    assert any(s.key.protocol is Protocol.SCTP for s in mixed)
    fam = family_of(FIXTURES / "main")
    daemons = wire.decode_daemons((FIXTURES / "main" / "daemons.bin").read_bytes(), fam)
    assert [d.state for d in daemons] == [DaemonState.MASTER, DaemonState.BACKUP]
    assert (
        wire.decode_daemons((FIXTURES / "mixed" / "daemons.bin").read_bytes(), family_of(FIXTURES / "mixed"))
        == []
    )


# --------------------------------------------------------------------------- recorded error replies


ERRORS = FIXTURES / "errors"


def test_eperm_names_the_capability() -> None:
    with pytest.raises(SourceError) as e:
        wire.decode_info((ERRORS / "info_eperm.bin").read_bytes(), family_of(FIXTURES / "main"))
    assert e.value.kind is IssueKind.NO_PERMISSION
    assert "CAP_NET_ADMIN" in str(e.value) and "EPERM" in str(e.value)


def test_missing_service_and_dest() -> None:
    fam = family_of(FIXTURES / "main")
    with pytest.raises(wire.NetlinkError) as e:
        wire.decode_services((ERRORS / "service_esrch.bin").read_bytes(), fam)
    assert (e.value.kind, e.value.errno) == (IssueKind.INCONSISTENT, errno.ESRCH)
    # the kernel answers a dest dump of a missing service with an empty dump, not an error
    assert wire.decode_dests((ERRORS / "dests_missing.bin").read_bytes(), fam, AF_INET) == []
    with pytest.raises(wire.NetlinkError) as e:
        wire.ack((ERRORS / "set_dest_enoent.bin").read_bytes(), "SET_DEST")
    assert (e.value.kind, e.value.errno) == (IssueKind.INCONSISTENT, errno.ENOENT)
    wire.ack((ERRORS / "set_dest_ack.bin").read_bytes(), "SET_DEST")


def test_recorded_set_dest_request_is_what_the_encoder_writes() -> None:
    """The kernel acked this SET_DEST (set_dest_ack.bin): the encoder's layout is one it accepts."""
    fam = family_of(FIXTURES / "main")
    request = (ERRORS / "set_dest_ack.request.bin").read_bytes()
    seq = struct.unpack_from("=I", request, 8)[0]
    key = ServiceKey.tcp("203.0.113.14", 8080)
    (gue,) = [d for s in with_dests("main") if s.key == key for d in s.dests if d.address == "192.0.2.12"]
    assert request == wire.set_dest_request(fam, seq, key, gue)


def test_family_list_with_and_without_ip_vs() -> None:
    without = families((ERRORS / "ctrl_families_noipvs.bin").read_bytes())
    assert "nlctrl" in without and "IPVS" not in without
    assert families((FIXTURES / "main" / "ctrl_families.bin").read_bytes())["IPVS"] > GENL_ID_CTRL


# --------------------------------------------------------------------------- round trips


def addresses(family: int) -> st.SearchStrategy[str]:
    return st.ip_addresses(v=4 if family == AF_INET else 6).map(str)


u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
counters = st.builds(Counters, u64, u64, u64, u64, u64)
rates = st.builds(Rates, u64, u64, u64, u64, u64)


@st.composite
def services(draw: st.DrawFn) -> Service:
    family = draw(st.sampled_from([AF_INET, AF_INET6]))
    if draw(st.booleans()):
        key = ServiceKey(family, Protocol.NONE, "", 0, draw(st.integers(1, 2**32 - 1)))
    else:
        proto = draw(st.sampled_from([Protocol.TCP, Protocol.UDP, Protocol.SCTP]))
        key = ServiceKey(family, proto, draw(addresses(family)), draw(st.integers(0, 65535)))
    return Service(
        key=key,
        scheduler=draw(st.sampled_from(["rr", "wrr", "wlc", "lblcr", "mh", "sh", "none"])),
        flags=draw(u32),
        timeout=draw(u32),
        netmask=draw(u32 if family == AF_INET else st.integers(1, 128)),
        pe_name=draw(st.sampled_from(["", "sip"])),
        counters=draw(counters),
        rates=draw(rates),
    )


@st.composite
def dests(draw: st.DrawFn) -> Dest:
    family = draw(st.sampled_from([AF_INET, AF_INET6]))
    return Dest(
        family=family,
        address=draw(addresses(family)),
        port=draw(st.integers(0, 65535)),
        fwd=draw(st.sampled_from(FwdMethod)),
        weight=draw(st.integers(0, 2**31 - 1)),
        u_threshold=draw(u32),
        l_threshold=draw(u32),
        active_conns=draw(u32),
        inactive_conns=draw(u32),
        persist_conns=draw(u32),
        tun_type=draw(st.sampled_from(TunType)),
        tun_port=draw(st.integers(0, 65535)),
        tun_flags=draw(st.integers(0, 65535)),
        counters=draw(counters),
        rates=draw(rates),
    )


def in_buffer(replies: list[bytes], *, strip: bool) -> tuple[bytearray, list[wire.Span]]:
    """Replies back to back in one buffer, as NetlinkSource receives them; with `strip` each one's
    final clean NLMSG_DONE is left out of the buffer as NetlinkSource does with a lone one."""
    buf = bytearray()
    spans: list[wire.Span] = []
    for r in replies:
        ended = strip and wire.is_clean_done(r[-wire.DONE_LEN :])
        body = r[: -wire.DONE_LEN] if ended else r
        spans.append((len(buf), len(buf) + len(body), ended))
        buf += body
    return buf, spans


def via_table(data: bytes, svc_family: int, *, strip: bool = False) -> list[Dest]:
    """A GET_DEST dump through the columnar decoder, back as rows (its error raised)."""
    table, errors = wire.decode_dest_table(*in_buffer([data], strip=strip), FAM, [svc_family])
    if errors:
        raise errors[0]
    assert table.service.tolist() == [0] * len(table)
    return table.rows()


def service_dump(svcs: list[Service], *, stats64: bool = True, seq: int = 1) -> bytes:
    payloads = [wire.nla(wire.CMD_ATTR_SERVICE, replies.encode_service(s, stats64=stats64)) for s in svcs]
    msgs = [wire.message(FAM, wire.CMD_NEW_SERVICE, p, flags=wire.NLM_F_MULTI, seq=seq) for p in payloads]
    return b"".join(msgs) + replies.done(seq)


def dest_dump(ds: list[Dest], *, stats64: bool = True, seq: int = 1) -> bytes:
    payloads = [wire.nla(wire.CMD_ATTR_DEST, replies.encode_dest(d, stats64=stats64)) for d in ds]
    msgs = [wire.message(FAM, wire.CMD_NEW_DEST, p, flags=wire.NLM_F_MULTI, seq=seq) for p in payloads]
    return b"".join(msgs) + replies.done(seq)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(services(), max_size=12))
def test_services_round_trip(svcs: list[Service]) -> None:
    data = service_dump(svcs)
    assert wire.decode_services(data, FAM, fast=False) == svcs
    assert wire.decode_services(data, FAM) == svcs
    assert wire.decode_services(data, FAM) == svcs  # again, now through compiled layouts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(dests(), max_size=40), st.sampled_from([AF_INET, AF_INET6]))
def test_dests_round_trip(ds: list[Dest], svc_family: int) -> None:
    data = dest_dump(ds)
    assert wire.decode_dests(data, FAM, svc_family, fast=False) == ds
    assert wire.decode_dests(data, FAM, svc_family) == ds
    assert wire.decode_dests(data, FAM, svc_family) == ds
    assert via_table(data, svc_family) == ds
    assert via_table(data, svc_family, strip=True) == ds


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(dests(), max_size=6), max_size=6), st.data())
def test_many_dumps_decode_into_one_table_with_their_errors(
    dumps: list[list[Dest]], data: st.DataObject
) -> None:
    replies = [dest_dump(ds, stats64=data.draw(st.booleans())) for ds in dumps]
    broken = data.draw(st.sets(st.integers(0, len(replies) - 1))) if replies else set()
    for i in broken:
        replies[i] = replies[i][:-4] + struct.pack("=i", -errno.ESRCH)  # the service vanished midway
    buf, spans = in_buffer(replies, strip=data.draw(st.booleans()))
    table, errors = wire.decode_dest_table(buf, spans, FAM, [AF_INET] * len(replies))
    assert sorted(errors) == sorted(broken)
    assert all(isinstance(e, wire.NetlinkError) and e.kind is IssueKind.INCONSISTENT for e in errors.values())
    want = [
        (i, d) for i, r in enumerate(replies) if i not in broken for d in wire.decode_dests(r, FAM, AF_INET)
    ]
    assert list(zip(table.service.tolist(), table.rows(), strict=True)) == want


def test_many_equal_layout_dests_use_compiled_runs() -> None:
    """Blocks of messages, a remainder and a layout change inside one reply all decode right."""
    base = Dest(AF_INET, "192.0.2.1", 80, FwdMethod.MASQ, 1, counters=Counters(1, 2, 3, 4, 5), rates=Rates())
    ds = [dataclasses.replace(base, address=f"192.0.2.{i % 250}", weight=i) for i in range(70)]
    ds[40] = dataclasses.replace(ds[40], family=AF_INET6, address="2001:db8::40")  # longer message
    data = dest_dump(ds)
    for _ in range(2):
        assert wire.decode_dests(data, FAM, AF_INET) == ds
        assert via_table(data, AF_INET) == ds


def test_old_kernel_32bit_stats_and_missing_attributes() -> None:
    """Kernels before 4.1 send only the 32-bit STATS; before 4.3 no dest family; before 5.2 no tunnel."""
    d = Dest(
        AF_INET6,
        "2001:db8::5",
        8080,
        FwdMethod.ROUTE,
        3,
        active_conns=2,
        counters=Counters(7, 8, 9, 2**40, 11),
        rates=Rates(1, 2, 3, 4, 5),
    )
    assert wire.decode_dests(dest_dump([d] * 3, stats64=False), FAM, AF_INET6) == [d] * 3
    assert via_table(dest_dump([d] * 3, stats64=False), AF_INET6) == [d] * 3
    attrs = (
        wire.nla(wire.DEST_ATTR_ADDR, bytes.fromhex("20010db8" + "00" * 11 + "05"))
        + wire.nla(wire.DEST_ATTR_PORT, (8080).to_bytes(2, "big"))
        + wire.nla(wire.DEST_ATTR_FWD_METHOD, struct.pack("=I", 3))
        + wire.nla(wire.DEST_ATTR_WEIGHT, struct.pack("=I", 3))
    )
    msg = wire.message(FAM, wire.CMD_NEW_DEST, wire.nla(wire.CMD_ATTR_DEST, attrs), flags=2, seq=1)
    old = dataclasses.replace(d, active_conns=0, persist_conns=None, counters=None, rates=None)
    for _ in range(2):
        assert wire.decode_dests(msg * 2 + replies.done(1), FAM, AF_INET6) == [old, old]
        assert via_table(msg * 2 + replies.done(1), AF_INET6) == [old, old]
    s = Service(ServiceKey.tcp("203.0.113.1", 80), "wlc", counters=Counters(1, 2, 3, 4, 5), rates=Rates())
    assert wire.decode_services(service_dump([s], stats64=False), FAM) == [s]


def test_fast_built_objects_are_plain_model_objects() -> None:
    """What the decoder builds are ordinary model objects."""
    d = Dest(
        AF_INET,
        "192.0.2.9",
        80,
        FwdMethod.TUNNEL,
        4,
        counters=Counters(1, 2, 3, 4, 5),
        rates=Rates(1, 1, 1, 1, 1),
    )
    (got,) = wire.decode_dests(dest_dump([d]), FAM, AF_INET)
    assert type(got) is Dest and type(got.counters) is Counters and type(got.rates) is Rates
    assert got == d and hash(got) == hash(d) and got.instant is None
    assert all(getattr(got, f.name) == getattr(d, f.name) for f in dataclasses.fields(Dest))
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.weight = 5  # type: ignore[misc]


# --------------------------------------------------------------------------- bad input


def sample_dump() -> bytes:
    ds = [
        Dest(AF_INET, f"192.0.2.{i}", 80, FwdMethod.MASQ, i, counters=Counters(), rates=Rates())
        for i in range(3)
    ]
    return dest_dump(ds)


def test_every_truncation_is_a_parse_error() -> None:
    data = sample_dump()
    for cut in range(len(data)):
        with pytest.raises(ParseError):
            wire.decode_dests(data[:cut], FAM, AF_INET)
        with pytest.raises(ParseError):
            wire.decode_dests(data[:cut], FAM, AF_INET, fast=False)
        with pytest.raises(ParseError):
            via_table(data[:cut], AF_INET)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupted_bytes_never_leak_other_exceptions(data: st.DataObject) -> None:
    raw = bytearray(sample_dump() + service_dump([Service(ServiceKey.mark(3), "rr")]))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    for decode in (
        lambda b: wire.decode_dests(b, FAM, AF_INET),
        lambda b: wire.decode_dests(b, FAM, AF_INET, fast=False),
        lambda b: via_table(b, AF_INET),
        lambda b: wire.decode_services(b, FAM),
        lambda b: wire.decode_daemons(b, FAM),
        lambda b: wire.decode_info(b, FAM),
        lambda b: wire.decode_config(b, FAM),
        lambda b: wire.scan_chunk(b, "x"),
    ):
        with contextlib.suppress(ParseError, SourceError):
            decode(bytes(raw))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-20], "no NLMSG_DONE"),
        (lambda b: struct.pack("=I", 8) + b[4:], "claims 8 bytes"),
        (lambda b: b[:4] + struct.pack("=H", 99) + b[6:], "unexpected netlink message type 99"),
        (lambda b: b[:16] + bytes([wire.CMD_NEW_SERVICE]) + b[17:], "expected NEW_DEST"),
        (lambda b: b[:20] + struct.pack("=H", 2000) + b[22:], "bad length 2000"),
        (lambda b: struct.pack("=IH", 24, wire.NLMSG_OVERRUN) + bytes(18) + b, "overrun"),
    ],
)
def test_malformed_replies_say_what_is_wrong(mutate: object, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        wire.decode_dests(mutate(sample_dump()), FAM, AF_INET)  # type: ignore[operator]
    with pytest.raises(ParseError, match=message):
        via_table(mutate(sample_dump()), AF_INET)  # type: ignore[operator]


def test_unknown_enum_values_are_parse_errors() -> None:
    d = Dest(AF_INET, "192.0.2.1", 80, FwdMethod.MASQ, 1, counters=Counters(), rates=Rates())
    bad_fwd = dest_dump([d]).replace(
        wire.nla(wire.DEST_ATTR_FWD_METHOD, struct.pack("=I", 0)),
        wire.nla(wire.DEST_ATTR_FWD_METHOD, struct.pack("=I", 6)),
    )
    with pytest.raises(ParseError, match="forwarding method 6"):
        wire.decode_dests(bad_fwd, FAM, AF_INET)
    assert via_table(dest_dump([d]), AF_INET) == [d]  # compiles the layout bad_fwd has too
    with pytest.raises(ParseError, match="forwarding method 6"):
        via_table(bad_fwd, AF_INET)
    svc = Service(ServiceKey.tcp("203.0.113.1", 80), "rr", counters=Counters(), rates=Rates())
    bad_af = service_dump([svc]).replace(
        wire.nla(wire.SVC_ATTR_AF, struct.pack("=H", 2)), wire.nla(wire.SVC_ATTR_AF, struct.pack("=H", 7))
    )
    with pytest.raises(ParseError, match="address family 7"):
        wire.decode_services(bad_af, FAM)


# --------------------------------------------------------------------------- errors and framing


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (errno.EPERM, IssueKind.NO_PERMISSION),
        (errno.EACCES, IssueKind.NO_PERMISSION),
        (errno.ESRCH, IssueKind.INCONSISTENT),
        (errno.ENOENT, IssueKind.INCONSISTENT),
        (errno.EINVAL, IssueKind.IO),
        (errno.EMSGSIZE, IssueKind.IO),
    ],
)
def test_error_replies_map_to_issue_kinds(code: int, kind: IssueKind) -> None:
    request = wire.get_dests_request(FAM, 9, ServiceKey.tcp("203.0.113.1", 80))
    reply = replies.error(code, request)
    with pytest.raises(wire.NetlinkError) as e:
        wire.decode_dests(reply, FAM, AF_INET)
    assert (e.value.kind, e.value.errno) == (kind, code)
    assert errno.errorcode[code] in str(e.value)
    # a dump that fails midway reports the error in NLMSG_DONE
    failed_done = sample_dump()[:-4] + struct.pack("=i", -code)
    with pytest.raises(wire.NetlinkError) as e:
        wire.decode_dests(failed_done, FAM, AF_INET)
    assert e.value.kind is kind
    for bad in (reply, failed_done):
        with pytest.raises(wire.NetlinkError) as e:
            via_table(bad, AF_INET)
        assert (e.value.kind, e.value.errno) == (kind, code)


def test_ack_and_scan_chunk() -> None:
    request = wire.set_dest_request(
        FAM, 5, ServiceKey.mark(1), Dest(AF_INET, "192.0.2.1", 0, FwdMethod.ROUTE, 2)
    )
    wire.ack(replies.error(0, request), "SET_DEST")
    assert wire.scan_chunk(replies.error(0, request), "x") == (5, True)
    with pytest.raises(ParseError, match="no acknowledgement"):
        wire.ack(b"", "SET_DEST")
    dump = sample_dump()
    assert wire.scan_chunk(dump[:-20], "x") == (1, False)  # multi-part messages, no DONE yet
    assert wire.scan_chunk(dump, "x") == (1, True)
    info = wire.message(FAM, wire.CMD_SET_INFO, b"", flags=0, seq=3)
    assert wire.scan_chunk(info, "x") == (3, True)  # a plain doit reply ends at its message


def test_requests_carry_the_service_key_and_whole_dest() -> None:
    key = ServiceKey.tcp("2001:db8::1", 443)
    dest = Dest(
        AF_INET,
        "192.0.2.7",
        8443,
        FwdMethod.TUNNEL,
        9,
        100,
        10,
        tun_type=TunType.GUE,
        tun_port=6080,
        tun_flags=TUN_F_REMCSUM,
    )
    req = wire.set_dest_request(FAM, 11, key, dest)
    length, ftype, flags, seq, _pid = struct.unpack_from("=IHHII", req)
    assert (length, ftype, flags, seq) == (len(req), FAM, wire.NLM_F_REQUEST | wire.NLM_F_ACK, 11)
    assert req[16] == wire.CMD_SET_DEST
    # the dest attributes read back as the dest itself (reference path of the decoder)
    inner = req[20 + 4 + len(wire.encode_service_key(key)) + 4 :]
    reply = wire.message(FAM, wire.CMD_NEW_DEST, wire.nla(wire.CMD_ATTR_DEST, inner), flags=2, seq=1)
    (back,) = wire.decode_dests(reply + replies.done(1), FAM, AF_INET6, fast=False)
    assert dataclasses.replace(back, persist_conns=0) == dest
    dump = wire.get_dests_request(FAM, 4, ServiceKey.mark(7, AF_INET6))
    assert struct.unpack_from("=HH", dump, 4)[1] & wire.NLM_F_DUMP == wire.NLM_F_DUMP
    assert dump.endswith(
        wire.nla(wire.SVC_ATTR_AF, struct.pack("=H", AF_INET6))
        + wire.nla(wire.SVC_ATTR_FWMARK, struct.pack("=I", 7))
    )
