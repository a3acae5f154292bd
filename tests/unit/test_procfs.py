"""ProcSource and the /proc parsers, on real 6.1 output (tests/fixtures/proc/sample-6.1) and hand-made
IPv6/FWM/SCTP/PE files (tests/fixtures/proc/handmade). ipvsadm's output of the same moment is the
oracle (tests/fixtures/proc/oracle)."""

from __future__ import annotations

import gzip
import os
import shutil
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvstop.errors import ParseError, SourceError
from lvstop.model import (
    AF_INET,
    AF_INET6,
    EXPLAINING_SYSCTLS,
    SVC_F_HASHED,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    DestTable,
    FwdMethod,
    IssueKind,
    Protocol,
    Service,
    ServiceKey,
    ServiceRows,
)
from lvstop.sources import procfs
from lvstop.sources.procfs import (
    ProcSource,
    conn_layout,
    detect_hz,
    parse_addr,
    parse_conn_line,
    parse_hostport,
    parse_ip_vs,
    parse_ip_vs_stats,
    parse_sysctls,
    read_sysctls,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "proc"
SAMPLE = FIXTURES / "sample-6.1"
HANDMADE = FIXTURES / "handmade"
ORACLE = FIXTURES / "oracle"
BOOT = FIXTURES / "boot"


def text(p: Path) -> str:
    return p.read_text(encoding="ascii")


def sample_services() -> tuple[Service, ...]:
    return parse_ip_vs(text(SAMPLE / "net" / "ip_vs"), hz=250)


def ipvsadm_ln(path: Path) -> dict[str, dict[str, object]]:
    """The oracle: `ipvsadm -Ln` as {"TCP 203.0.113.10:80": {...}}."""
    out: dict[str, dict[str, object]] = {}
    cur: dict[str, object] = {}
    for line in text(path).splitlines()[3:]:
        f = line.split()
        if f[0] == "->":
            dests = cur["dests"]
            assert isinstance(dests, set)
            dests.add((f[1], f[2], int(f[3]), int(f[4]), int(f[5])))
            continue
        rest = f[3:]
        cur = {"scheduler": f[2], "dests": set(), "persistent": None}
        if rest and rest[0].startswith("("):  # scheduler flags: /proc cannot show them
            rest = rest[1:]
        if rest:
            assert rest[0] == "persistent" and rest[2] == "mask"
            cur["persistent"] = (int(rest[1]), rest[3])
        out[f"{f[0]} {f[1]}"] = cur
    return out


# ------------------------------------------------------------------ /proc/net/ip_vs


def test_sample_ip_vs_matches_ipvsadm_ln() -> None:
    oracle = ipvsadm_ln(ORACLE / "ipvsadm-Ln.txt")
    services = sample_services()
    assert {str(s.key) for s in services} == set(oracle)
    for s in services:
        want = oracle[str(s.key)]
        assert s.scheduler == want["scheduler"]
        assert {
            (str(d.key), d.fwd.label, d.weight, d.active_conns, d.inactive_conns) for d in s.dests
        } == want["dests"]
        if want["persistent"] is None:
            assert not s.persistent
        else:
            assert s.persistent
            assert (s.timeout, str(IPv4Address(s.netmask))) == want["persistent"]


def test_sample_persistence_is_jiffies_over_hz() -> None:
    # The kernel prints svc->timeout, i.e. seconds * HZ: 30000 on a HZ=250 kernel for -p 120.
    raw = next(line for line in text(SAMPLE / "net" / "ip_vs").splitlines() if "persistent" in line)
    jiffies = int(raw.split()[-2])
    [s] = [s for s in parse_ip_vs(text(SAMPLE / "net" / "ip_vs"), hz=100) if s.persistent]
    assert s.timeout == jiffies // 100
    [s] = [s for s in sample_services() if s.persistent]
    assert s.timeout * 250 == jiffies
    assert s.prefix_len == 24


def test_sample_fields_proc_cannot_see() -> None:
    for s in sample_services():
        assert s.flags & SVC_F_HASHED
        assert s.counters is None and s.rates is None
        assert s.sched_flags() == ()  # mh-fallback,mh-port are invisible in /proc
        for d in s.dests:
            assert d.counters is None and d.rates is None and d.persist_conns is None


def test_handmade_ipv6_fwmark_sctp_ops() -> None:
    services = {s.key: s for s in parse_ip_vs(text(HANDMADE / "ip_vs"), hz=250)}
    v6 = services[ServiceKey(AF_INET6, Protocol.TCP, "2001:db8::10", 80)]
    assert (v6.timeout, v6.netmask, v6.prefix_len) == (300, 64, 64)
    assert [(d.address, d.port, d.weight, d.active_conns) for d in v6.dests] == [
        ("2001:db8::1:1", 8080, 2, 1),
        ("2001:db8::1:2", 8080, 0, 0),
    ]

    sctp = services[ServiceKey(AF_INET, Protocol.SCTP, "203.0.113.10", 2905)]
    assert sctp.scheduler == "sh" and sctp.dests[0].fwd is FwdMethod.ROUTE

    tun = services[ServiceKey.tcp("203.0.113.13", 8080)]
    assert [(d.family, d.address, d.fwd) for d in tun.dests] == [
        (AF_INET, "192.0.2.12", FwdMethod.TUNNEL),
        (AF_INET6, "2001:db8::1:3", FwdMethod.TUNNEL),
    ]

    sip = services[ServiceKey.udp("203.0.113.10", 5060)]
    assert (sip.timeout, sip.netmask, sip.prefix_len) == (180, 0xFFFFFFFF, 32)

    fwm2 = services[ServiceKey.mark(2, AF_INET6)]  # family told by its dests
    assert (fwm2.persistent, fwm2.timeout, fwm2.prefix_len) == (True, 240, 128)
    fwm3 = services[ServiceKey.mark(3)]
    assert fwm3.flags == SVC_F_HASHED | SVC_F_ONEPACKET
    fwm4 = services[ServiceKey.mark(4)]
    assert fwm4.flags == SVC_F_HASHED | SVC_F_PERSISTENT and fwm4.timeout == 60

    ops = services[ServiceKey.udp("203.0.113.10", 53)]
    assert ops.one_packet and ops.dests[0].fwd is FwdMethod.LOCAL
    assert len(services) == 8


def test_ipv6_prefix_printed_big_endian_is_read_too() -> None:
    # A big-endian kernel's ntohl() is a no-op: prefix 64 prints as 00000040.
    t = text(HANDMADE / "ip_vs").replace("persistent 75000 40000000", "persistent 75000 00000040")
    [v6] = [s for s in parse_ip_vs(t, hz=250) if s.key.address == "2001:db8::10"]
    assert v6.prefix_len == 64


def test_without_hz_persistence_timeout_is_unknown() -> None:
    [s] = [s for s in parse_ip_vs(text(SAMPLE / "net" / "ip_vs")) if s.persistent]
    assert s.timeout == 0


def _replace_line(t: str, lineno: int, new: str) -> str:
    lines = t.splitlines()
    lines[lineno - 1] = new
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("lineno", "new", "reason"),
    [
        (1, "IP Virtual Server version x (size=4096)", "IP Virtual Server version"),
        (2, "garbage", "Prot LocalAddress:Port"),
        (3, "garbage", "RemoteAddress:Port"),
        (4, "TCP  CB00710G:0035 rr", "bad hex"),
        (4, "ICMP  CB00710A:0035 rr", "unknown protocol"),
        (4, "TCP  CB00710A rr", "bad address:port"),
        (4, "TCP  CB00710A:0035 rr persistent 30000", "unexpected flags"),
        (4, "TCP  CB00710A:0035 rr sticky", "unexpected flags"),
        (4, "FWM  00000000 rr", "fwmark 0"),
        (5, "  -> C000020D:14E9      Masq    1      0", "dest line needs"),
        (5, "  -> C000020D:14E9      Teleport 1      0          4", "unknown forwarding method"),
        (5, "  -> C000020D:14E9      Masq    one    0          4", "bad number"),
        (5, "  -> [2001:db8::1]:14E9      Masq    1      0          4", "bad IPv6 address"),
    ],
)
def test_malformed_ip_vs_names_file_and_line(lineno: int, new: str, reason: str) -> None:
    t = _replace_line(text(SAMPLE / "net" / "ip_vs"), lineno, new)
    with pytest.raises(ParseError) as ei:
        parse_ip_vs(t, hz=250, source="/x/ip_vs")
    assert ei.value.line == lineno
    assert ei.value.source == "/x/ip_vs"
    assert reason in str(ei.value) and str(ei.value).startswith(f"/x/ip_vs:{lineno}: ")


def test_malformed_dest_before_service_and_bad_v6_prefix() -> None:
    head = "\n".join(text(SAMPLE / "net" / "ip_vs").splitlines()[:3])
    with pytest.raises(ParseError) as ei:
        parse_ip_vs(head + "\n  -> C000020D:14E9      Masq    1      0          4\n")
    assert ei.value.line == 4
    bad = text(HANDMADE / "ip_vs").replace("persistent 75000 40000000", "persistent 75000 FFFFFFFF")
    with pytest.raises(ParseError) as ei:
        parse_ip_vs(bad, hz=250)
    assert ei.value.line == 4 and "prefix" in str(ei.value)
    with pytest.raises(ParseError) as ei:
        parse_ip_vs("")
    assert ei.value.line == 1


def test_parse_hostport_forms() -> None:
    assert parse_hostport("CB00710A:0050") == (AF_INET, "203.0.113.10", 80)
    assert parse_hostport("[2001:0db8:0000:0000:0000:0000:0000:0001]:01BB") == (AF_INET6, "2001:db8::1", 443)
    for bad in ("CB00710A0050", "CB00710A:50", "CB0071:0050", "[2001:db8::1]:0050", "+B00710A:0050"):
        with pytest.raises(ValueError):
            parse_hostport(bad)


# ------------------------------------------------------------------ /proc/net/ip_vs_stats


def test_sample_stats_totals_equal_sum_of_services() -> None:
    counters, rates = parse_ip_vs_stats(text(SAMPLE / "net" / "ip_vs_stats"))
    rows = [
        line.split()
        for line in text(ORACLE / "ipvsadm-Ln-stats-exact.txt").splitlines()[3:]
        if not line.startswith("  ->")
    ]
    sums = [sum(int(r[i]) for r in rows) for i in range(2, 7)]
    assert [counters.conns, counters.inpkts, counters.outpkts, counters.inbytes, counters.outbytes] == sums
    # the rates line holds the kernel's own EWMA read-out, in hex
    printed = [int(v, 16) for v in text(SAMPLE / "net" / "ip_vs_stats").splitlines()[-1].split()]
    assert [rates.cps, rates.inpps, rates.outpps, rates.inbps, rates.outbps] == printed


@pytest.mark.parametrize(
    ("lineno", "new"), [(1, "Nope"), (3, "7C 2A6 296 B0DA"), (6, "9 30 2E C65 XYZ"), (5, "Conns Pkts")]
)
def test_malformed_stats(lineno: int, new: str) -> None:
    t = _replace_line(text(SAMPLE / "net" / "ip_vs_stats"), lineno, new)
    with pytest.raises(ParseError) as ei:
        parse_ip_vs_stats(t)
    assert ei.value.line == lineno


# ------------------------------------------------------------------ ip_vs_conn(_sync) lines


def test_conn_layouts() -> None:
    assert conn_layout(text(SAMPLE / "net" / "ip_vs_conn").splitlines()[0]) == (False, frozenset((9, 11)))
    assert conn_layout(text(SAMPLE / "net" / "ip_vs_conn_sync").splitlines()[0]) == (True, frozenset((10,)))
    assert conn_layout(text(HANDMADE / "ip_vs_conn_old").splitlines()[0]) == (False, frozenset((9,)))
    with pytest.raises(ParseError) as ei:
        conn_layout("Pro FromIP FPrt")
    assert ei.value.line == 1


def test_parse_conn_lines() -> None:
    lines = text(HANDMADE / "ip_vs_conn").splitlines()
    e = parse_conn_line(lines[1], 2, False)
    assert (e.protocol, e.client, e.client_port, e.vaddr, e.vport, e.daddr, e.dport, e.state, e.expires) == (
        "TCP",
        "2001:db8::2:1",
        50000,
        "2001:db8::10",
        80,
        "2001:db8::1:1",
        8080,
        "ESTABLISHED",
        899,
    )
    assert not e.is_template and e.origin is None
    tun = parse_conn_line(lines[4], 5, False)  # IPv4 connection, IPv6 tunnel dest
    assert (tun.vaddr, tun.daddr) == ("203.0.113.13", "2001:db8::1:3")
    sip = parse_conn_line(lines[5], 6, False)
    assert (sip.pe_name, sip.pe_data, sip.state) == ("sip", "abc123@client", "UDP")
    fwm_tpl = parse_conn_line(lines[7], 8, False)
    assert fwm_tpl.is_template and (fwm_tpl.protocol, fwm_tpl.vaddr, fwm_tpl.dport) == ("IP", "0:2::", 0)
    s = parse_conn_line(text(HANDMADE / "ip_vs_conn_sync_backup").splitlines()[1], 2, True)
    assert (s.origin, s.expires, s.client) == ("SYNC", 895, "198.51.100.2")


@pytest.mark.parametrize(
    ("line", "sync", "reason"),
    [
        ("TCP C6336402 BC3C CB00710A 0053 C000020D 1F90 TIME_WAIT", False, "fields"),
        ("TCP C6336402 BC3C CB00710A 0053 C000020D 1F90 TIME_WAIT LOCAL 113", False, "fields"),
        ("TCP C6336402 BC3C CB00710A 0053 C000020D 1F90 TIME_WAIT 113", True, "fields"),
        ("TCP C6336402 BC3C CB00710A 0053 C000020D 1F90 TIME_WAIT REMOTE 113", True, "unknown origin"),
        ("ICMP C6336402 BC3C CB00710A 0053 C000020D 1F90 TIME_WAIT 113", False, "unknown protocol"),
        ("TCP C633640Z BC3C CB00710A 0053 C000020D 1F90 TIME_WAIT 113", False, "bad hex"),
        ("TCP C6336402 BC3 CB00710A 0053 C000020D 1F90 TIME_WAIT 113", False, "bad hex"),
        ("TCP C6336402 BC3C CB00710A 0053 2001:db8::1 1F90 TIME_WAIT 113", False, "bad address"),
        ("TCP C6336402 BC3C CB00710A 0053 C000020D 1F90 TIME_WAIT soon", False, "bad number"),
    ],
)
def test_malformed_conn_line(line: str, sync: bool, reason: str) -> None:
    with pytest.raises(ParseError) as ei:
        parse_conn_line(line, 17, sync)
    assert ei.value.line == 17 and reason in str(ei.value)
    assert ei.value.source == ("/proc/net/ip_vs_conn_sync" if sync else "/proc/net/ip_vs_conn")


# ------------------------------------------------------------------ sysctls and HZ


def test_sample_sysctls_match_sysctl_output() -> None:
    got = read_sysctls(str(SAMPLE / "sys" / "net" / "ipv4" / "vs"))
    for name in os.listdir(SAMPLE / "sys" / "net" / "ipv4" / "vs"):
        values = text(SAMPLE / "sys" / "net" / "ipv4" / "vs" / name).split()
        if len(values) == 1:
            assert got[name] == int(values[0])
        else:
            assert name not in got
            assert [got[f"{name}.{i}"] for i in range(len(values))] == [int(v) for v in values]
    assert set(EXPLAINING_SYSCTLS) <= set(got)
    assert (got["sync_threshold.0"], got["sync_threshold.1"]) == (3, 50)


def test_parse_sysctls_keeps_integers_only() -> None:
    raw = {"a": "1\n", "b": "-2", "v": "3\t50\n", "cpus": "0-3\n", "empty": "", "x": "1 y"}
    assert parse_sysctls(raw) == {"a": 1, "b": -2, "v.0": 3, "v.1": 50}


def test_detect_hz(tmp_path: Path) -> None:
    proc, sysr, boot = tmp_path / "proc", tmp_path / "proc" / "sys", tmp_path / "boot"
    (sysr / "kernel").mkdir(parents=True)
    boot.mkdir()
    assert detect_hz(str(proc), str(sysr), str(boot)) is None
    (sysr / "kernel" / "osrelease").write_text("6.1.0-56-amd64\n")
    shutil.copy(BOOT / "config-6.1.0-56-amd64", boot)
    assert detect_hz(str(proc), str(sysr), str(boot)) == 250
    (proc / "config.gz").write_bytes(gzip.compress(b"CONFIG_HZ=1000\n")[:-12])  # truncated: ignored
    assert detect_hz(str(proc), str(sysr), str(boot)) == 250
    with gzip.open(proc / "config.gz", "wb") as f:  # /proc/config.gz wins when present
        f.write(b"CONFIG_HZ_1000=y\nCONFIG_HZ=1000\n")
    assert detect_hz(str(proc), str(sysr), str(boot)) == 1000


# ------------------------------------------------------------------ ProcSource


def test_read_sample_snapshot() -> None:
    snap = ProcSource(str(SAMPLE), boot_dir=str(BOOT)).read()
    assert (snap.source, snap.director) == ("proc", "lvs-lab")
    assert (snap.version, snap.conn_tab_size) == ("1.2.1", 4096)
    assert snap.services == sample_services()
    assert (snap.totals, snap.total_rates) == parse_ip_vs_stats(text(SAMPLE / "net" / "ip_vs_stats"))
    assert snap.sysctls["expire_nodest_conn"] == 0 and snap.sysctls["conn_reuse_mode"] == 1
    assert [i.kind for i in snap.issues] == [IssueKind.UNAVAILABLE]
    assert "counters" in snap.issues[0].message and snap.ok
    assert snap.timeouts is None and snap.daemons is None  # unseen, not "none running"
    assert snap.poll_duration is not None and snap.poll_duration >= 0
    [persistent] = [s for s in snap.services if s.persistent]
    assert persistent.timeout == 120


def test_read_without_hz_says_why(tmp_path: Path) -> None:
    snap = ProcSource(str(SAMPLE), boot_dir=str(tmp_path)).read()
    assert [s.timeout for s in snap.services if s.persistent] == [0]
    assert any("CONFIG_HZ" in i.message and i.kind is IssueKind.UNAVAILABLE for i in snap.issues)
    snap = ProcSource(str(SAMPLE), boot_dir=str(tmp_path), hz=100).read()
    assert [s.timeout for s in snap.services if s.persistent] == [300]
    assert len(snap.issues) == 1


def _copy_root(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    shutil.copytree(SAMPLE, root)
    return root


def test_missing_ip_vs_means_not_loaded(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as ei:
        ProcSource(str(tmp_path)).read()
    assert ei.value.kind is IssueKind.NO_IPVS and "ip_vs is not loaded" in str(ei.value)
    with pytest.raises(SourceError) as ei:
        ProcSource(str(tmp_path)).conn_lines()
    assert ei.value.kind is IssueKind.NO_IPVS


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(path: str, *a: object, **k: object) -> None:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(procfs, "open", denied, raising=False)
    with pytest.raises(SourceError) as ei:
        ProcSource(str(SAMPLE), hz=250).read()
    assert ei.value.kind is IssueKind.NO_PERMISSION and "permission denied" in str(ei.value)


def test_stats_problems_are_issues(tmp_path: Path) -> None:
    root = _copy_root(tmp_path)
    (root / "net" / "ip_vs_stats").write_text("garbage\n")
    snap = ProcSource(str(root), hz=250).read()
    assert snap.totals is None and snap.total_rates is None
    assert [i.kind for i in snap.issues] == [IssueKind.UNAVAILABLE, IssueKind.MALFORMED]
    assert "ip_vs_stats:1" in snap.issues[1].message
    (root / "net" / "ip_vs_stats").unlink()
    shutil.rmtree(root / "sys" / "net")
    snap = ProcSource(str(root), hz=250).read()
    assert [i.kind for i in snap.issues] == [IssueKind.UNAVAILABLE, IssueKind.IO, IssueKind.IO]
    assert snap.sysctls == {} and len(snap.services) == 9


def test_malformed_ip_vs_raises_with_path(tmp_path: Path) -> None:
    root = _copy_root(tmp_path)
    t = text(root / "net" / "ip_vs")
    (root / "net" / "ip_vs").write_text(_replace_line(t, 6, "  -> C000020D:14E9      Masq"))
    with pytest.raises(ParseError) as ei:
        ProcSource(str(root), hz=250).read()
    assert ei.value.source == str(root / "net" / "ip_vs") and ei.value.line == 6


def test_conn_lines_stream_and_sync_fallback(tmp_path: Path) -> None:
    src = ProcSource(str(SAMPLE), hz=250)
    for sync, name in ((True, "ip_vs_conn_sync"), (False, "ip_vs_conn")):
        assert list(src.conn_lines(sync=sync)) == text(SAMPLE / "net" / name).splitlines(keepends=True)
    root = _copy_root(tmp_path)
    (root / "net" / "ip_vs_conn_sync").unlink()
    with pytest.raises(SourceError) as ei:
        ProcSource(str(root), hz=250).conn_lines(sync=True)
    assert ei.value.kind is IssueKind.UNAVAILABLE
    src.close()


# ------------------------------------------------------------------ property: kernel format round trip

_HZ_VALUES = (100, 250, 300, 1000)


@st.composite
def kernel_services(draw: st.DrawFn) -> tuple[str, list[tuple[object, ...]], int]:
    """Services printed the way ip_vs_info_seq_show prints them (little-endian kernel)."""
    hz = draw(st.sampled_from(_HZ_VALUES))
    out = [
        "IP Virtual Server version 1.2.1 (size=4096)",
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn",
    ]
    want: list[tuple[object, ...]] = []
    for i in range(draw(st.integers(0, 6))):
        v6 = draw(st.booleans())
        fwmark = draw(st.integers(1, 2**32 - 1)) if draw(st.booleans()) and not v6 else 0
        proto = draw(st.sampled_from(["TCP", "UDP", "SCTP"]))
        port = draw(st.integers(0, 65535))
        sched = draw(st.sampled_from(["rr", "wlc", "mh", "none"]))
        ops = draw(st.booleans()) and not v6  # the kernel prints "ops" for IPv4 lines only
        persistent = draw(st.booleans())
        seconds = draw(st.integers(1, 10**6))
        if v6:
            addr = f"2001:db8::{i + 1:x}"
            head = f"{proto}  [{IPv6Address(addr).exploded}]:{port:04X} {sched} "
        elif fwmark:
            addr = ""
            head = f"FWM  {fwmark:08X} {sched} {'ops ' if ops else ''}"
        else:
            addr = f"203.0.113.{i + 1}"
            head = f"{proto}  {int(IPv4Address(addr)):08X}:{port:04X} {sched} {'ops ' if ops else ''}"
        prefix = draw(st.integers(1, 128)) if v6 else draw(st.integers(0, 32))
        mask = (
            int.from_bytes(prefix.to_bytes(4, "little"), "big")
            if v6
            else (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
        )
        out.append(head + (f"persistent {seconds * hz} {mask:08X}" if persistent else ""))
        dests = []
        for j in range(draw(st.integers(0, 3))):
            w, a, n = draw(st.integers(0, 65535)), draw(st.integers(0, 10**6)), draw(st.integers(0, 10**6))
            fwd = draw(st.sampled_from(["Masq", "Local", "Tunnel", "Route"]))
            daddr = f"2001:db8::1:{j + 1:x}" if v6 else f"192.0.2.{j + 1}"
            shown = f"[{IPv6Address(daddr).exploded}]" if v6 else f"{int(IPv4Address(daddr)):08X}"
            out.append(f"  -> {shown}:{port:04X}      {fwd:<7} {w:<6d} {a:<10d} {n:<10d}")
            dests.append((daddr, port, fwd, w, a, n))
        family = AF_INET6 if v6 else AF_INET
        key = ServiceKey.mark(fwmark) if fwmark else ServiceKey(family, procfs.PROTOCOLS[proto], addr, port)
        want.append(
            (
                key,
                sched,
                ops,
                persistent,
                seconds if persistent else 0,
                (prefix if persistent else 128) if v6 else (mask if persistent else 0xFFFFFFFF),
                dests,
            )
        )
    return "\n".join(out) + "\n", want, hz


@settings(max_examples=60, deadline=None)
@given(kernel_services())
def test_ip_vs_round_trip(case: tuple[str, list[tuple[object, ...]], int]) -> None:
    text_, want, hz = case
    got = parse_ip_vs(text_, hz=hz)
    assert [
        (
            s.key,
            s.scheduler,
            s.one_packet,
            s.persistent,
            s.timeout,
            s.netmask,
            [(d.address, d.port, d.fwd.label, d.weight, d.active_conns, d.inactive_conns) for d in s.dests],
        )
        for s in got
    ] == want


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.integers(0, 2**128 - 1),
        st.integers(0, 2**32 - 1).map(lambda n: 0xFFFF << 32 | n),  # IPv4-mapped
        st.integers(0, 2**32 - 1),  # IPv4-compatible
        st.lists(st.sampled_from([0, 0, 0, 1, 0xFFFF, 0x0DB8]), min_size=8, max_size=8).map(
            lambda ws: sum(w << (16 * i) for i, w in enumerate(ws))
        ),
    )
)
def test_ipv6_text_is_what_ipaddress_writes(n: int) -> None:
    """parse_addr's fast IPv6 path (inet_ntop) gives the canonical text of model.normalize_address."""
    assert parse_addr(IPv6Address(n).exploded) == (AF_INET6, str(IPv6Address(n)))


def _changed_line(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1
    return text.replace(old, new)


def test_polling_reuses_what_did_not_change(tmp_path: Path) -> None:
    """Unchanged bytes are not parsed again (the same table for the same bytes); a change is read,
    a change of length alone too."""
    shutil.copytree(SAMPLE, tmp_path / "p")
    ip_vs = tmp_path / "p" / "net" / "ip_vs"
    src = ProcSource(root=str(tmp_path / "p"), hz=250)
    first = src.read().table
    assert src.read().table is first  # the same bytes
    ip_vs.write_text(
        _changed_line(
            ip_vs.read_text(),
            "  -> C000020D:14E9      Masq    1      0          4",
            "  -> C000020D:14E9      Masq    1      0          5",
        )
    )
    second = src.read()
    assert second.table is not first
    assert tuple(second.services) == parse_ip_vs(ip_vs.read_text(), hz=250) != tuple(ServiceRows(first))
    ip_vs.write_text(ip_vs.read_text() + "\n")  # a blank line: the same services, new bytes
    third = src.read()
    assert third.table is not second.table and tuple(third.services) == tuple(second.services)


def _one_by_one(text: str, which: list[bool]) -> str:
    """`text` with the chosen dest lines spaced as the kernel never prints them (one space before
    "->"), which sends them through the per-line parser."""
    lines = text.split("\n")
    dests = [i for i, line in enumerate(lines) if line.startswith("  -> ")]
    for i, slow in zip(dests, which, strict=False):
        if slow:
            lines[i] = lines[i][1:]
    return "\n".join(lines)


@settings(max_examples=60, deadline=None)
@given(kernel_services(), st.lists(st.booleans(), max_size=30))
def test_vectorised_dest_lines_equal_the_per_line_parse(
    case: tuple[str, list[tuple[object, ...]], int], which: list[bool]
) -> None:
    """Any mix of lines parsed all at once and line by line gives the same rows, and the same columns
    as the rows give (DestTable.from_rows)."""
    text_, _, hz = case
    every = parse_ip_vs(_one_by_one(text_, [True] * 1000), hz=hz)
    assert parse_ip_vs(text_, hz=hz) == every
    mixed = procfs.parse_ip_vs_table(_one_by_one(text_, which), hz=hz)
    assert tuple(ServiceRows(mixed)) == every
    want = DestTable.from_rows(every)
    for name in ("service", "family", "addr", "port", "fwd", "weight", "active", "inactive", "persist"):
        assert getattr(mixed.dests, name).tolist() == getattr(want, name).tolist(), name


@pytest.mark.parametrize(
    ("line", "want"),
    [
        ("  -> C000020D:14E9\tMasq 1 0 4", (1, 0, 4)),  # a tab: still the vectorised parse
        ("  -> C000020D:14E9      Masq    1      -3         4", (1, -3, 4)),  # a sign: line by line
        ("  -> c000020d:14e9      Masq    007    0          4", (7, 0, 4)),  # lower-case hex, zeros
        ("  -> C000020D:14E9      Masq    1      0          " + "9" * 19, (1, 0, 10**19 - 1)),
        ("  -> C000020D:14E9      Masq    1      0          4\r", (1, 0, 4)),
    ],
)
def test_dest_line_shapes(line: str, want: tuple[int, int, int]) -> None:
    head = "\n".join(text(SAMPLE / "net" / "ip_vs").splitlines()[:4])
    for tail in ("\n", ""):  # with and without the last newline
        if want[2] >= 1 << 63:
            with pytest.raises(ParseError, match="out of range") as ei:
                parse_ip_vs(f"{head}\n{line}{tail}")
            assert ei.value.line == 5
            continue
        [s] = parse_ip_vs(f"{head}\n{line}{tail}")
        [d] = s.dests
        assert (d.address, d.port, d.fwd, d.weight, d.active_conns, d.inactive_conns) == (
            "192.0.2.13",
            5353,
            FwdMethod.MASQ,
            *want,
        )


def test_first_bad_line_is_named_whichever_parse_meets_it() -> None:
    """Errors come in file order across both parses: a bad service line after a good dest line, a
    dest line (vectorised) before any service line ahead of a bad line below it."""
    lines = text(SAMPLE / "net" / "ip_vs").splitlines()
    bad = [*lines[:5], "  -> C000020D:14E9      Masq    x      0          4", *lines[5:7], "ICMP x rr"]
    with pytest.raises(ParseError, match="bad number") as ei:
        parse_ip_vs("\n".join(bad))
    assert ei.value.line == 6
    early = [*lines[:3], "", "  -> C000020D:14E9      Masq    1      0          4", "ICMP x rr"]
    with pytest.raises(ParseError, match="before any service") as ei:
        parse_ip_vs("\n".join(early))
    assert ei.value.line == 5


def test_a_poll_of_proc_keeps_its_columns_and_their_none() -> None:
    """/proc has no counters: the poller fills nothing in, so it publishes the source's own columns
    (no copies of 100k x 5 rates), and every rate stays None."""
    from lvstop.poller import Poller  # the poller's side of the /proc columns

    src = ProcSource(root=str(SAMPLE), hz=250)
    poller = Poller(src)
    for _ in range(2):
        snap = poller.poll_once()
        d, own = snap.table.dests, src.read().table.dests
        assert d.rates is own.rates and d.instant is own.instant and d.has_rates is own.has_rates
        assert all(x.rates is None and x.instant is None for s in snap.services for x in s.dests)
        assert len(d) == sum(len(s.dests) for s in snap.services) > 0
