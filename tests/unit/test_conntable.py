"""ConnTable and ConnTableReader: aggregates of the real 6.1 table checked against ipvsadm -Lnc and
ipvsadm -Ln of the same moment, attribution on hand-made IPv6/FWM/SCTP tables, filters, the time
budget, bad input."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address, ip_network
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvstop.conntable import ConnFilter, ConnSummary, ConnTable, ConnTableReader
from lvstop.errors import ParseError, SourceError
from lvstop.model import (
    AF_INET,
    AF_INET6,
    Dest,
    DestKey,
    FwdMethod,
    IssueKind,
    Protocol,
    Service,
    ServiceKey,
    Snapshot,
)
from lvstop.sources.procfs import ProcSource, parse_ip_vs

FIXTURES = Path(__file__).parent.parent / "fixtures" / "proc"
SAMPLE = FIXTURES / "sample-6.1"
HANDMADE = FIXTURES / "handmade"
ORACLE = FIXTURES / "oracle"


def lines_of(p: Path) -> list[str]:
    return p.read_text(encoding="ascii").splitlines(keepends=True)


def sample_services() -> tuple[Service, ...]:
    return parse_ip_vs((SAMPLE / "net" / "ip_vs").read_text(), hz=250)


def handmade_services() -> tuple[Service, ...]:
    return parse_ip_vs((HANDMADE / "ip_vs").read_text(), hz=250)


def summarize(
    path: Path,
    services: tuple[Service, ...] | None = None,
    *,
    sync: bool = False,
    filters: ConnFilter | None = None,
    max_entries: int = 500,
) -> ConnSummary:
    return ConnTable(services, max_entries=max_entries).summarize(
        lines_of(path), sync=sync, budget_s=None, filters=filters
    )


def lnc() -> list[tuple[str, str, str, str, str]]:
    """ipvsadm -Lnc as (pro, state, source, virtual, destination)."""
    rows = []
    for line in (ORACLE / "ipvsadm-Lnc.txt").read_text().splitlines()[2:]:
        pro, _expire, state, source, virtual, dest = line.split()
        rows.append((pro, state, source, virtual, dest))
    return rows


def hostport(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


# ------------------------------------------------------------------ the real table


def test_entries_equal_ipvsadm_lnc() -> None:
    s = summarize(SAMPLE / "net" / "ip_vs_conn")
    got = Counter(
        (
            e.protocol,
            e.state,
            hostport(e.client, e.client_port),
            hostport(e.vaddr, e.vport),
            hostport(e.daddr, e.dport),
        )
        for e in s.entries
    )
    assert got == Counter(lnc())
    assert s.total == s.matched == len(lnc()) and not s.partial and s.unattributed is None


def test_raw_aggregates_equal_counting_lnc_by_hand() -> None:
    # Without services every entry is keyed by what the kernel printed, like ipvsadm -Lnc shows it.
    s = summarize(SAMPLE / "net" / "ip_vs_conn")
    states: Counter[tuple[str, str, str]] = Counter()
    templates: Counter[tuple[str, str]] = Counter()
    for pro, state, source, virtual, dest in lnc():
        if source.endswith(":0"):
            templates[(f"{pro} {virtual}", dest)] += 1
        else:
            states[(f"{pro} {virtual}", dest, state)] += 1
    got_states = Counter(
        {(str(sk), str(dk), st): n for (sk, dk), c in s.by_dest.items() for st, n in c.states.items()}
    )
    got_templates = Counter(
        {(str(sk), str(dk)): c.templates for (sk, dk), c in s.by_dest.items() if c.templates}
    )
    assert got_states == states
    assert got_templates == templates
    assert s.overall.conns + s.overall.templates == s.total
    assert sum(c.conns for c in s.by_service.values()) == s.overall.conns


def test_per_dest_active_inactive_equal_ipvsadm_ln() -> None:
    # ActiveConn/InActConn of ipvsadm -Ln, taken at the same moment, count the same entries;
    # fwmark traffic (vaddr 203.0.113.12:80 in the table) must land on FWM 1's dests.
    s = summarize(SAMPLE / "net" / "ip_vs_conn", sample_services())
    want = {}
    for svc in sample_services():
        for d in svc.dests:
            want[(svc.key, d.key)] = (d.active_conns, d.inactive_conns)
    got = {k: (c.active, c.inactive) for k, c in s.by_dest.items()}
    assert got == {k: v for k, v in want.items() if v != (0, 0)}
    assert s.unattributed == 0
    assert ServiceKey.tcp("203.0.113.12", 80) not in s.by_service
    assert s.by_service[ServiceKey.mark(1)].conns == 12
    persistent = ServiceKey.tcp("203.0.113.10", 443)
    assert s.by_service[persistent].templates == 1 == s.overall.templates
    assert s.by_dest[(persistent, DestKey(AF_INET, "192.0.2.12", 8080))].templates == 1


def test_top_clients_equal_lnc_counts() -> None:
    s = summarize(SAMPLE / "net" / "ip_vs_conn")
    clients = Counter(src.rsplit(":", 1)[0] for _, _, src, _, _ in lnc() if not src.endswith(":0"))
    assert dict(s.top_clients) == dict(clients.most_common(20))
    assert [n for _, n in s.top_clients] == sorted((n for _, n in s.top_clients), reverse=True)
    assert s.distinct_clients == len(clients)


def test_sync_file_counts_origins() -> None:
    s = summarize(SAMPLE / "net" / "ip_vs_conn_sync", sample_services(), sync=True)
    plain = summarize(SAMPLE / "net" / "ip_vs_conn", sample_services())
    assert s.sync and dict(s.overall.origins) == {"LOCAL": s.total}
    assert {k: dict(c.states) for k, c in s.by_dest.items()} == {
        k: dict(c.states) for k, c in plain.by_dest.items()
    }
    b = summarize(HANDMADE / "ip_vs_conn_sync_backup", sample_services(), sync=True)
    assert dict(b.overall.origins) == {"SYNC": 3, "LOCAL": 1}
    vip80 = b.by_service[ServiceKey.tcp("203.0.113.10", 80)]
    assert (dict(vip80.origins), vip80.active, vip80.inactive) == ({"SYNC": 2, "LOCAL": 1}, 2, 1)
    assert b.by_service[ServiceKey.tcp("203.0.113.10", 443)].templates == 1
    assert b.entries[0].origin == "SYNC"


# ------------------------------------------------------------------ attribution (hand-made)


def test_handmade_attribution() -> None:
    s = summarize(HANDMADE / "ip_vs_conn", handmade_services())
    v6 = ServiceKey(AF_INET6, Protocol.TCP, "2001:db8::10", 80)
    v6dest = DestKey(AF_INET6, "2001:db8::1:1", 8080)
    assert (s.by_dest[(v6, v6dest)].active, s.by_dest[(v6, v6dest)].templates) == (1, 1)
    sctp = ServiceKey(AF_INET, Protocol.SCTP, "203.0.113.10", 2905)
    assert s.by_dest[(sctp, DestKey(AF_INET, "192.0.2.11", 2905))].active == 1
    tun = ServiceKey.tcp("203.0.113.13", 8080)
    assert s.by_dest[(tun, DestKey(AF_INET6, "2001:db8::1:3", 8080))].active == 1
    sip = ServiceKey.udp("203.0.113.10", 5060)
    assert (s.by_service[sip].inactive, s.by_service[sip].templates) == (1, 1)
    # fwmark 2 (IPv6): its template (vaddr = the mark, dport 0) and traffic to [2001:db8::20]:443
    fwm2 = ServiceKey.mark(2, AF_INET6)
    assert dict(s.by_dest[(fwm2, v6dest)].states) == {"SYN_RECV": 1}
    assert s.by_dest[(fwm2, v6dest)].templates == 1
    # fwmark 3 (ops, UDP to 203.0.113.12:53), fwmark 4 (template and traffic to 203.0.113.12:80)
    assert s.by_dest[(ServiceKey.mark(3), DestKey(AF_INET, "192.0.2.14", 53))].inactive == 1
    fwm4 = s.by_dest[(ServiceKey.mark(4), DestKey(AF_INET, "192.0.2.11", 8080))]
    assert (fwm4.active, fwm4.templates) == (1, 1)
    # a deleted service: keyed as printed, counted as unattributed
    gone = ServiceKey.tcp("203.0.113.254", 80)
    assert s.by_service[gone].active == 1 and s.unattributed == 1
    assert set(s.by_service) == {v6, sctp, tun, sip, fwm2, ServiceKey.mark(3), ServiceKey.mark(4), gone}


def test_handmade_without_services_keys_templates_by_mark() -> None:
    s = summarize(HANDMADE / "ip_vs_conn")
    assert s.by_service[ServiceKey.mark(2, AF_INET6)].templates == 1
    assert s.by_dest[(ServiceKey.mark(4), DestKey(AF_INET, "192.0.2.11", 0))].templates == 1
    assert s.by_service[ServiceKey(AF_INET6, Protocol.TCP, "2001:db8::20", 443)].conns == 1
    assert s.unattributed is None


def test_old_header_without_pe_columns() -> None:
    s = summarize(HANDMADE / "ip_vs_conn_old", sample_services())
    assert dict(s.by_service[ServiceKey.tcp("203.0.113.10", 80)].states) == {"ESTABLISHED": 1, "TIME_WAIT": 1}
    bad = [*lines_of(HANDMADE / "ip_vs_conn_old"), lines_of(HANDMADE / "ip_vs_conn")[5]]
    with pytest.raises(ParseError) as ei:
        ConnTable().summarize(bad, sync=False, budget_s=None, filters=None)
    assert ei.value.line == 4 and "expected 9 fields, got 11" in str(ei.value)


# ------------------------------------------------------------------ filters and bounds


def lnc_matching(pred: object) -> list[tuple[str, str, str, str, str]]:
    return [r for r in lnc() if pred(r)]  # type: ignore[operator]


@pytest.mark.parametrize(
    ("flt", "pred"),
    [
        (ConnFilter(service=ServiceKey.mark(1)), lambda r: r[3] == "203.0.113.12:80"),
        (ConnFilter(dest=DestKey(AF_INET, "192.0.2.11", 5353)), lambda r: r[4] == "192.0.2.11:5353"),
        (ConnFilter(client_prefix=ip_network("198.51.100.3/32")), lambda r: r[2].startswith("198.51.100.3:")),
        (ConnFilter(client_prefix=ip_network("198.51.100.0/30")), lambda r: True),
        (ConnFilter(client_prefix=ip_network("2001:db8::/32")), lambda r: False),
        (ConnFilter(state="established"), lambda r: r[1] == "ESTABLISHED"),
        (ConnFilter(protocol="udp"), lambda r: r[0] == "UDP"),
        (
            ConnFilter(service=ServiceKey.tcp("203.0.113.10", 443), state="ASSURED"),
            lambda r: r[1] == "ASSURED",
        ),
        (
            ConnFilter(
                service=ServiceKey.tcp("203.0.113.10", 80),
                state="TIME_WAIT",
                dest=DestKey(AF_INET, "192.0.2.13", 8080),
            ),
            lambda r: r[1:2] + r[3:] == ("TIME_WAIT", "203.0.113.10:80", "192.0.2.13:8080"),
        ),
    ],
)
def test_filters_match_lnc_selection(flt: ConnFilter, pred: object) -> None:
    s = summarize(SAMPLE / "net" / "ip_vs_conn", sample_services(), filters=flt)
    want = lnc_matching(pred)
    assert s.matched == len(want) == len(s.entries)
    assert s.total == len(lnc())
    assert s.overall.conns + s.overall.templates == s.matched
    assert s.filters is flt
    assert Counter(e.state for e in s.entries) == Counter(r[1] for r in want)


def test_entries_are_bounded_and_in_table_order() -> None:
    s = summarize(SAMPLE / "net" / "ip_vs_conn", max_entries=5)
    assert len(s.entries) == 5 and s.matched == len(lnc())
    first = lines_of(SAMPLE / "net" / "ip_vs_conn")[1:6]
    assert [(e.client_port, e.vport) for e in s.entries] == [
        (int(ln.split()[2], 16), int(ln.split()[4], 16)) for ln in first
    ]


# ------------------------------------------------------------------ budget


def synthetic(n: int) -> list[str]:
    head = lines_of(SAMPLE / "net" / "ip_vs_conn")[0]
    return [head] + [
        f"TCP C6336402 {1024 + i:04X} CB00710A 0050 C000020B 1F90 ESTABLISHED     899\n" for i in range(n)
    ]


class StepClock:
    """Advances `step` seconds per call."""

    def __init__(self, step: float) -> None:
        self.t = 0.0
        self.step = step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def test_budget_cuts_the_read_short_and_closes_the_file() -> None:
    closed = []

    def gen() -> Iterator[str]:
        try:
            yield from synthetic(3000)
        finally:
            closed.append(True)

    s = ConnTable().summarize(gen(), sync=False, budget_s=1.5, filters=None, clock=StepClock(1.0))
    assert s.partial and closed == [True]
    assert 0 < s.total < 3000 and s.total == s.matched == s.overall.conns
    assert s.read_seconds > 1.5


def test_budget_reached_at_the_very_end_is_not_partial() -> None:
    s = ConnTable().summarize(synthetic(100), sync=False, budget_s=0.5, filters=None, clock=StepClock(1.0))
    assert not s.partial and s.total == 100


def test_no_budget_reads_everything() -> None:
    s = ConnTable().summarize(synthetic(3000), sync=False, budget_s=None, filters=None, clock=StepClock(1.0))
    assert not s.partial and s.total == 3000 and s.top_clients == (("198.51.100.2", 3000),)


# ------------------------------------------------------------------ bad input


def _with_line(lineno: int, new: str) -> list[str]:
    lines = lines_of(SAMPLE / "net" / "ip_vs_conn")
    lines[lineno - 1] = new + "\n"
    return lines


@pytest.mark.parametrize(
    ("lineno", "new", "reason"),
    [
        (1, "Pro FromIP FPrt", "not an ip_vs_conn header"),
        (7, "TCP C6336402 BC3C CB00710A 0053 C000020D 1F90", "expected 9 or 11 fields, got 7"),
        (40, "TCP C6336402 BC3C CB00710X 0053 C000020D 1F90 TIME_WAIT 114", "bad hex"),
        (40, "TCP C6336402 BC3C CB00710A 0053 C000020D 1F9 TIME_WAIT 114", "bad hex"),
        (41, "TCP C633640 BC3C CB00710A 0053 C000020D 1F90 TIME_WAIT 114", "bad address"),
        (42, "ICMP C6336402 BC3C CB00710A 0053 C000020D 1F90 TIME_WAIT 114", "unknown protocol"),
        (3, "TCP C6336402 BC3Z CB00710A 0053 C000020D 1F90 TIME_WAIT 114", "bad hex"),  # a kept entry
    ],
)
def test_malformed_table_names_the_line(lineno: int, new: str, reason: str) -> None:
    with pytest.raises(ParseError) as ei:
        ConnTable(sample_services()).summarize(
            _with_line(lineno, new), sync=False, budget_s=None, filters=None
        )
    assert ei.value.line == lineno and reason in str(ei.value)
    assert ei.value.source == "/proc/net/ip_vs_conn"


def test_client_prefix_filter_validates_clients() -> None:
    bad = _with_line(9, "TCP C633640 BC3C CB00710A 0053 C000020D 1F90 TIME_WAIT 114")
    with pytest.raises(ParseError) as ei:
        ConnTable().summarize(
            bad, sync=False, budget_s=None, filters=ConnFilter(client_prefix=ip_network("198.51.100.0/24"))
        )
    assert ei.value.line == 9


def test_header_must_match_sync_flag() -> None:
    with pytest.raises(ParseError) as ei:
        summarize(SAMPLE / "net" / "ip_vs_conn_sync", sync=False)
    assert ei.value.line == 1 and "ip_vs_conn_sync" in str(ei.value)


def test_empty_and_blank_lines() -> None:
    s = ConnTable().summarize([], sync=False, budget_s=None, filters=None)
    assert (s.total, s.matched, s.entries, s.partial) == (0, 0, (), False)
    s = ConnTable().summarize(
        [*lines_of(SAMPLE / "net" / "ip_vs_conn"), "\n", ""], sync=False, budget_s=None, filters=None
    )
    assert s.total == len(lnc())


# ------------------------------------------------------------------ the reader


class FakeSource:
    """conn_lines() from fixture files; no _sync file unless given."""

    name = "fake"

    def __init__(self, plain: list[str], sync: list[str] | None = None) -> None:
        self.plain, self.sync = plain, sync
        self.calls: list[bool] = []

    def read(self) -> Snapshot:
        raise AssertionError("the reader never polls")

    def conn_lines(self, sync: bool = False) -> Iterator[str]:
        self.calls.append(sync)
        if sync:
            if self.sync is None:
                raise SourceError(IssueKind.UNAVAILABLE, "no ip_vs_conn_sync")
            return iter(self.sync)
        return iter(self.plain)

    def close(self) -> None:
        pass


def test_reader_falls_back_to_plain_file_and_publishes() -> None:
    src = FakeSource(lines_of(SAMPLE / "net" / "ip_vs_conn"))
    reader = ConnTableReader(src, services=sample_services)
    got: list[ConnSummary] = []
    unsubscribe = reader.subscribe(got.append)
    s = reader.refresh_now()
    assert src.calls == [True, False] and not s.sync
    assert reader.latest is s and got == [s] and reader.last_error is None
    assert s.unattributed == 0 and ServiceKey.mark(1) in s.by_service
    unsubscribe()
    reader.refresh_now()
    assert got == [s]


def test_reader_prefers_sync_and_applies_filters() -> None:
    src = FakeSource(lines_of(SAMPLE / "net" / "ip_vs_conn"), lines_of(SAMPLE / "net" / "ip_vs_conn_sync"))
    reader = ConnTableReader(src, filters=ConnFilter(protocol="UDP"), max_entries=3)
    s = reader.refresh_now()
    assert s.sync and src.calls == [True] and s.matched == 12 and len(s.entries) == 3
    assert s.unattributed is None


def test_reader_keeps_latest_on_error() -> None:
    src = FakeSource(lines_of(SAMPLE / "net" / "ip_vs_conn"))
    reader = ConnTableReader(src)
    good = reader.refresh_now()
    src.plain = ["garbage\n"]
    with pytest.raises(ParseError):
        reader.refresh_now()
    assert reader.latest is good and reader.last_error is not None and ":1:" in reader.last_error
    src.plain = lines_of(SAMPLE / "net" / "ip_vs_conn")
    reader.refresh_now()
    assert reader.last_error is None


def test_reader_thread_survives_an_unexpected_error() -> None:
    class Flaky(FakeSource):
        def conn_lines(self, sync: bool = False) -> Iterator[str]:
            if len(self.calls) < 2:  # the first attempt (sync, then plain) hits a bug
                self.calls.append(sync)
                raise RuntimeError("boom")
            return super().conn_lines(sync)

    src = Flaky(lines_of(SAMPLE / "net" / "ip_vs_conn"))
    reader = ConnTableReader(src, interval=0.01)
    reader.start()
    try:
        deadline = time.monotonic() + 5
        while reader.latest is None:
            assert time.monotonic() < deadline, reader.last_error
            time.sleep(0.01)
    finally:
        reader.stop(timeout=2)
    assert reader.latest.total > 0


def test_reader_thread_on_proc_fixture() -> None:
    reader = ConnTableReader(
        ProcSource(str(SAMPLE), hz=250), interval=0.01, services=lambda: sample_services()
    )
    seen = threading.Event()
    summaries: list[ConnSummary] = []

    def on_summary(s: ConnSummary) -> None:
        summaries.append(s)
        if len(summaries) >= 2:
            seen.set()

    reader.subscribe(on_summary)
    reader.start()
    try:
        assert seen.wait(5.0)
    finally:
        reader.stop(timeout=5.0)
    assert all(s.sync and dict(s.overall.origins) == {"LOCAL": s.total} for s in summaries)
    assert reader.latest is summaries[-1]


def test_broken_subscriber_does_not_stop_the_others() -> None:
    reader = ConnTableReader(FakeSource(lines_of(SAMPLE / "net" / "ip_vs_conn")))
    got: list[ConnSummary] = []

    def broken(s: ConnSummary) -> None:
        raise RuntimeError("boom")

    reader.subscribe(broken)
    reader.subscribe(got.append)
    s = reader.refresh_now()
    assert got == [s]


# ------------------------------------------------------------------ property: counts equal a plain count

_entry = st.tuples(
    st.booleans(),  # IPv6
    st.sampled_from(["TCP", "UDP", "SCTP"]),
    st.integers(0, 7),  # client
    st.integers(0, 65535),  # client port (0: a template)
    st.integers(0, 3),  # vip
    st.sampled_from([80, 443]),
    st.integers(0, 3),  # dest
    st.sampled_from(["ESTABLISHED", "TIME_WAIT", "SYN_RECV", "UDP", "NONE"]),
)


def _render(e: tuple[bool, str, int, int, int, int, int, str]) -> tuple[str, tuple[str, ...]]:
    v6, proto, client, cport, vip, vport, dest, state = e
    if v6:
        c, v, d = (f"2001:db8::{n}" for n in (f"c:{client}", f"a:{vip}", f"d:{dest}"))
        hexed = [IPv6Address(x).exploded for x in (c, v, d)]
    else:
        c, v, d = f"198.51.100.{client}", f"203.0.113.{vip}", f"192.0.2.{dest}"
        hexed = [f"{int(IPv4Address(x)):08X}" for x in (c, v, d)]
    line = f"{proto:<3} {hexed[0]} {cport:04X} {hexed[1]} {vport:04X} {hexed[2]} 1F90 {state:<11} {100:7d}\n"
    return line, (f"{proto} {hostport(v, vport)}", hostport(d, 8080), state, c, "T" if cport == 0 else "C")


@settings(max_examples=60, deadline=None)
@given(st.lists(_entry, max_size=60), st.integers(1, 5))
def test_counts_equal_a_plain_count(
    entries: list[tuple[bool, str, int, int, int, int, int, str]], max_entries: int
) -> None:
    head = lines_of(SAMPLE / "net" / "ip_vs_conn")[0]
    rendered = [_render(e) for e in entries]
    s = ConnTable(max_entries=max_entries).summarize(
        [head] + [r[0] for r in rendered], sync=False, budget_s=None, filters=None
    )
    want_states = Counter((v, d, st_) for _, (v, d, st_, _, kind) in rendered if kind == "C")
    want_templates = Counter((v, d) for _, (v, d, _, _, kind) in rendered if kind == "T")
    got_states = Counter(
        {(str(sk), str(dk), name): n for (sk, dk), c in s.by_dest.items() for name, n in c.states.items()}
    )
    got_templates = Counter(
        {(str(sk), str(dk)): c.templates for (sk, dk), c in s.by_dest.items() if c.templates}
    )
    assert got_states == want_states and got_templates == want_templates
    clients = Counter(c for _, (_, _, _, c, kind) in rendered if kind == "C")
    assert dict(s.top_clients) == dict(clients.most_common(20)) and s.distinct_clients == len(clients)
    assert s.total == s.matched == len(entries)
    assert len(s.entries) == min(max_entries, len(entries))


def test_fwmark_dests_with_port_zero_take_the_packets_port() -> None:
    # ipvsadm -A -f 5; ipvsadm -a -f 5 -r 192.0.2.40 (no port): entries carry the real dest port
    fwm = Service(
        ServiceKey.mark(5),
        "wlc",
        dests=(
            Dest(AF_INET, "192.0.2.40", 0, FwdMethod.MASQ, 1),
            Dest(AF_INET, "192.0.2.41", 0, FwdMethod.MASQ, 1),
        ),
    )
    table = (
        "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"
        "TCP C6336402 BC3C CB00710C 01BB C0000228 01BB ESTABLISHED     899\n"
        "TCP C6336403 BC3D CB00710C 0050 C0000229 0050 TIME_WAIT       100\n"
        "IP  C6336402 0000 00000005 0000 C0000228 0000 NONE            300\n"
    )
    s = ConnTable([fwm]).summarize(table.splitlines(), sync=False, budget_s=None, filters=None)
    assert s.unattributed == 0
    assert s.by_service[fwm.key].active == 1 and s.by_service[fwm.key].inactive == 1
    d40 = s.by_dest[(fwm.key, DestKey(AF_INET, "192.0.2.40", 0))]
    assert (d40.active, d40.templates) == (1, 1)
    assert s.by_dest[(fwm.key, DestKey(AF_INET, "192.0.2.41", 0))].inactive == 1


@pytest.mark.parametrize(
    ("path", "sync"),
    [
        (SAMPLE / "net" / "ip_vs_conn", False),
        (SAMPLE / "net" / "ip_vs_conn_sync", True),
        (HANDMADE / "ip_vs_conn_sync_backup", True),
    ],
)
def test_without_detail_the_per_service_counts_are_the_same_and_nothing_else_is_kept(
    path: Path, sync: bool
) -> None:
    services = sample_services()
    full = ConnTable(services).summarize(lines_of(path), sync=sync, budget_s=None, filters=None)
    lean = ConnTable(services, detail=False).summarize(lines_of(path), sync=sync, budget_s=None, filters=None)
    assert lean.by_service == full.by_service and lean.overall == full.overall
    assert (lean.total, lean.matched, lean.unattributed) == (full.total, full.matched, full.unattributed)
    assert full.by_dest and full.top_clients and full.entries  # what the lean summary leaves out
    assert (dict(lean.by_dest), lean.top_clients, lean.distinct_clients, lean.entries) == ({}, (), 0, ())
