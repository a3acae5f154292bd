"""ConnTable's fast paths give what the parse_addr line loop gave: the same summary, in the same order,
or the same error on the same line, on the real 6.1 tables and on generated ones. The fast paths:
chunks counted by columns (numpy), and the cheap client checks (the usual-form regex instead of
parse_addr, integers instead of text for the client-prefix test)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvstop import conntable
from lvstop.conntable import ConnCounts, ConnFilter, ConnSummary, ConnTable
from lvstop.errors import ParseError
from lvstop.model import Service
from lvstop.sources.procfs import parse_addr, parse_ip_vs

FIXTURES = Path(__file__).parent.parent / "fixtures" / "proc"
SAMPLE = FIXTURES / "sample-6.1" / "net"
HANDMADE = FIXTURES / "handmade"


def lines_of(p: Path) -> list[str]:
    return p.read_text(encoding="ascii").splitlines(keepends=True)


SAMPLE_SERVICES = parse_ip_vs((SAMPLE / "ip_vs").read_text(), hz=250)
HANDMADE_SERVICES = parse_ip_vs((HANDMADE / "ip_vs").read_text(), hz=250)
FILTERS = [
    None,
    ConnFilter(client_prefix=ip_network("198.51.100.0/24")),
    ConnFilter(client_prefix=ip_network("198.51.100.2/32")),
    ConnFilter(client_prefix=ip_network("2001:db8::/32")),
    ConnFilter(state="time_wait"),
    ConnFilter(protocol="udp", client_prefix=ip_network("0.0.0.0/0")),
    ConnFilter(service=SAMPLE_SERVICES[0].key),
]


@contextmanager
def line_loop() -> Iterator[None]:
    """The reference: no client takes the shortcut, every new one goes through parse_addr."""
    with mock.patch.object(conntable, "_USUAL_ADDR", re.compile(r"(?!)")):
        yield


@contextmanager
def by_lines() -> Iterator[None]:
    """Every chunk counted line by line."""
    with mock.patch.object(conntable, "_MIN_COLUMNAR", 1 << 40):
        yield


@contextmanager
def by_columns() -> Iterator[None]:
    """Every chunk counted by columns, however small (the path falls back to lines on bad input)."""
    with mock.patch.object(conntable, "_MIN_COLUMNAR", 1):
        yield


def counts(c: ConnCounts) -> tuple[Any, ...]:
    return list(c.states.items()), c.templates, list(c.origins.items())


def plain(s: ConnSummary) -> tuple[Any, ...]:
    """Everything but the timings, mapping order included."""
    return (
        counts(s.overall),
        [(k, counts(v)) for k, v in s.by_service.items()],
        [(k, counts(v)) for k, v in s.by_dest.items()],
        s.top_clients,
        s.distinct_clients,
        s.total,
        s.matched,
        s.unattributed,
        s.entries,
        s.partial,
        s.sync,
        s.filters,
    )


def outcome(
    services: tuple[Service, ...] | None,
    lines: list[str],
    *,
    sync: bool = False,
    filters: ConnFilter | None = None,
    max_entries: int = 500,
) -> tuple[Any, ...]:
    table = ConnTable(services, max_entries=max_entries, top_clients=5)
    try:
        s = table.summarize(lines, sync=sync, budget_s=None, filters=filters, clock=lambda: 0.0)
    except ParseError as e:
        return "error", e.source, e.line, e.reason
    return "summary", plain(s)


def same(services: tuple[Service, ...] | None, lines: list[str], **kw: Any) -> tuple[Any, ...]:
    with by_columns():
        got = outcome(services, lines, **kw)
    with by_lines():
        lines_ = outcome(services, lines, **kw)
    with by_lines(), line_loop():
        want = outcome(services, lines, **kw)
    assert got == lines_ == want
    return got


# ------------------------------------------------------------------ the real tables


@pytest.mark.parametrize("flt", FILTERS)
@pytest.mark.parametrize(
    ("path", "sync"), [(SAMPLE / "ip_vs_conn", False), (SAMPLE / "ip_vs_conn_sync", True)]
)
def test_sample_tables(path: Path, sync: bool, flt: ConnFilter | None) -> None:
    kind, *_ = same(SAMPLE_SERVICES, lines_of(path), sync=sync, filters=flt, max_entries=7)
    assert kind == "summary"


@pytest.mark.parametrize("flt", FILTERS)
@pytest.mark.parametrize("services", [HANDMADE_SERVICES, None])
@pytest.mark.parametrize(
    ("name", "sync"), [("ip_vs_conn", False), ("ip_vs_conn_old", False), ("ip_vs_conn_sync_backup", True)]
)
def test_handmade_tables(
    name: str, sync: bool, services: tuple[Service, ...] | None, flt: ConnFilter | None
) -> None:
    kind, *_ = same(services, lines_of(HANDMADE / name), sync=sync, filters=flt)
    assert kind == "summary"


BAD_CLIENTS = [
    "C633640",  # 7 digits
    "C633640G",
    "2001:db8::2:1",  # compressed: /proc never prints it
    "2001:0db8:0000:0000:0000:0000:0002:000G",
    "2001:0db8:0000:0000:0000:0000:0002:00001",
    "2001:0db8:0000:0000:0000:0000:0002:0001%1",
    "fe80:0000:0000:0000:0000:0000:0:01%eth0",  # 39 characters, 7 colons, a scope: parse_addr takes it
    "0000:0000:0000:0000:0000:ffff:1.2.3.4",
]


@pytest.mark.parametrize("flt", FILTERS)
@pytest.mark.parametrize("client", [*BAD_CLIENTS, "c6336402", "2001:0DB8:0000:0000:0000:0000:0002:0001"])
@pytest.mark.parametrize("lineno", [3, 40])  # a kept entry, one further down
def test_odd_clients_in_the_sample_table(lineno: int, client: str, flt: ConnFilter | None) -> None:
    lines = lines_of(SAMPLE / "ip_vs_conn")
    f = lines[lineno - 1].split()
    lines[lineno - 1] = " ".join([f[0], client, *f[2:]]) + "\n"
    got = same(SAMPLE_SERVICES, lines, filters=flt, max_entries=5)
    if flt is None and client in BAD_CLIENTS[:6]:
        assert got[0] == "error" and got[2] == lineno


def test_the_line_loop_reference_is_another_path() -> None:
    """The comparison means something: under line_loop() every new client goes through parse_addr."""
    lines = lines_of(SAMPLE / "ip_vs_conn")
    calls: list[str] = []

    def spy(text: str) -> tuple[int, str]:
        calls.append(text)
        return parse_addr(text)

    def read() -> ConnSummary:
        table = ConnTable(SAMPLE_SERVICES, max_entries=0, top_clients=0)
        return table.summarize(lines, sync=False, budget_s=None, filters=None)

    with mock.patch.object(conntable, "parse_addr", spy):
        read()
        fast = len(calls)
        calls.clear()
        with line_loop():
            s = read()
    assert s.distinct_clients > 0 and len(calls) == fast + s.distinct_clients  # vaddrs, daddrs: both


# ------------------------------------------------------------------ generated tables


_hex = "0123456789ABCDEFabcdef"
_client = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda v: f"{v:08X}"),
    st.integers(0, 2**128 - 1).map(lambda v: ":".join(f"{v:032x}"[i : i + 4] for i in range(0, 32, 4))),
    st.sampled_from(BAD_CLIENTS),
    st.text(alphabet=_hex + ":%.Gg", min_size=6, max_size=41),
    st.lists(st.text(alphabet=_hex, min_size=1, max_size=5), min_size=8, max_size=8).map(":".join),
)
_base = lines_of(SAMPLE / "ip_vs_conn")[1:] + lines_of(HANDMADE / "ip_vs_conn")[1:]


@st.composite
def _table(draw: st.DrawFn) -> list[str]:
    clients = draw(st.lists(_client, min_size=1, max_size=6))
    rows = draw(
        st.lists(st.tuples(st.sampled_from(_base), st.sampled_from(clients), st.booleans()), max_size=60)
    )
    lines = [lines_of(SAMPLE / "ip_vs_conn")[0]]
    for base, client, template in rows:
        f = base.split()
        lines.append(" ".join([f[0], client, "0000" if template else f[2], *f[3:]]) + "\n")
    if draw(st.booleans()):  # a malformed line somewhere
        at = draw(st.integers(1, len(lines)))
        lines.insert(at, draw(st.sampled_from(["TCP C6336402 1F90\n", "\n", "ICMP " + _base[0][4:]])))
    return lines


_prefix = st.one_of(
    st.none(),
    st.builds(lambda v, n: IPv4Network((v, n), strict=False), st.integers(0, 2**32 - 1), st.integers(0, 32)),
    st.builds(
        lambda v, n: IPv6Network((v, n), strict=False), st.integers(0, 2**128 - 1), st.integers(0, 128)
    ),
    st.sampled_from([ip_network("198.51.100.0/24"), ip_network("2001:db8::/32")]),
)


@settings(max_examples=200, deadline=None)
@given(
    _table(),
    _prefix,
    st.sampled_from([None, "ESTABLISHED", "TIME_WAIT"]),
    st.sampled_from([SAMPLE_SERVICES, HANDMADE_SERVICES, None]),
    st.integers(0, 4),
)
def test_generated_tables(
    lines: list[str],
    prefix: IPv4Network | IPv6Network | None,
    state: str | None,
    services: tuple[Service, ...] | None,
    max_entries: int,
) -> None:
    flt = ConnFilter(client_prefix=prefix, state=state) if prefix or state else None
    same(services, lines, filters=flt, max_entries=max_entries)


@settings(max_examples=300, deadline=None)
@given(_client)
def test_client_ip_is_that_of_parse_addr(text: str) -> None:
    try:
        want = ip_address(parse_addr(text)[1])
    except ValueError as e:
        with pytest.raises(ValueError, match=re.escape(str(e))):
            conntable._client_ip(text)
        assert not conntable._USUAL_ADDR.fullmatch(text)
        return
    assert conntable._client_ip(text) == want


def test_fwmark_services_are_compared_too() -> None:
    kind, summary = same(HANDMADE_SERVICES, lines_of(HANDMADE / "ip_vs_conn"))
    assert kind == "summary" and any(k.is_fwmark for k, _ in summary[1])


def test_the_columns_path_is_taken() -> None:
    """The comparisons mean something: a well-formed chunk is counted by columns, a bad one is not."""
    calls: list[bool] = []
    real = conntable._columns

    def spy(chunk: list[str], widths: frozenset[int], sync: bool) -> Any:
        out = real(chunk, widths, sync)
        calls.append(out is not None)
        return out

    with by_columns(), mock.patch.object(conntable, "_columns", spy):
        same(SAMPLE_SERVICES, lines_of(SAMPLE / "ip_vs_conn"))
        assert calls == [True]
        calls.clear()
        same(SAMPLE_SERVICES, [*lines_of(SAMPLE / "ip_vs_conn"), "TCP C6336402 1F90\n"])
        assert calls == [False]


@pytest.mark.parametrize("sync", [False, True])
def test_a_generated_table_of_many_chunks(tmp_path: Path, sync: bool) -> None:
    """bench/procgen.py's table (IPv4, IPv6, fwmark templates, PE data), 40,000 entries: chunks of
    512 to 16,384 lines, counted by columns and line by line alike, with and without filters."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
    try:
        from procgen import write
    finally:
        sys.path.pop(0)
    write(tmp_path, 60, 8, 40_000)
    services = parse_ip_vs((tmp_path / "net" / "ip_vs").read_text(), hz=250)
    lines = lines_of(tmp_path / "net" / "ip_vs_conn")
    if sync:  # the same entries as ip_vs_conn_sync prints them, half of them synced
        lines = ["Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Origin Expires\n"] + [
            " ".join([*f[:8], "SYNC" if i % 2 else "LOCAL", f[8]]) + "\n"
            for i, f in enumerate(line.split() for line in lines[1:])
        ]
    for flt in (None, ConnFilter(state="established"), ConnFilter(client_prefix=ip_network("198.18.0.0/20"))):
        kind, summary = same(services, lines, sync=sync, filters=flt, max_entries=700)
        assert kind == "summary" and summary[5] == 40_000
