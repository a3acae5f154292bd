"""/proc's connection table read in blocks (ConnFile.block) counts what its lines count: the same
summary, or the same error on the same line; and a snapshot's services are read from their columns,
without Dest rows."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import ip_network
from pathlib import Path
from typing import Any, cast
from unittest import mock

import numpy as np
import pytest
from test_conntable_equiv import (
    FILTERS,
    HANDMADE,
    HANDMADE_SERVICES,
    SAMPLE,
    SAMPLE_SERVICES,
    by_columns,
    outcome,
)

from lvstop import conntable
from lvstop.conntable import ConnFilter, ConnTable
from lvstop.errors import ParseError, SourceError
from lvstop.model import IssueKind, Service, ServiceRows, Table
from lvstop.sources.procfs import ConnFile, ProcSource, parse_ip_vs, parse_ip_vs_table


@contextmanager
def small_blocks() -> Iterator[None]:
    """Blocks of a few lines: a table of a few dozen lines is read in many."""
    with mock.patch.object(conntable, "_BLOCK", 100), mock.patch.object(conntable, "_BIG_BLOCK", 700):
        yield


def put(root: Path, data: bytes, sync: bool = False) -> ProcSource:
    (root / "net").mkdir(parents=True, exist_ok=True)
    (root / "net" / "ip_vs_conn").write_bytes(data)  # _sync falls back to it when absent
    if sync:
        (root / "net" / "ip_vs_conn_sync").write_bytes(data)
    return ProcSource(str(root), hz=250)


def both(root: Path, data: bytes, services: Any, *, sync: bool = False, flt: ConnFilter | None = None) -> Any:
    """The summary of the file read in blocks, checked against that of its lines (as a text file
    gives them); small blocks and big ones, counted by columns however few their lines."""
    src = put(root, data, sync)
    want = outcome(services, list(src.conn_lines(sync)), sync=sync, filters=flt, max_entries=7)
    for ctx in (small_blocks, contextmanager(lambda: iter([None]))):
        with ctx(), by_columns():
            lines = src.conn_lines(sync)
            assert isinstance(lines, ConnFile)
            got = outcome(services, cast(Any, lines), sync=sync, filters=flt, max_entries=7)
        assert got == want
    return want


@pytest.mark.parametrize("flt", FILTERS)
@pytest.mark.parametrize(
    ("path", "services", "sync"),
    [
        (SAMPLE / "ip_vs_conn", SAMPLE_SERVICES, False),
        (SAMPLE / "ip_vs_conn_sync", SAMPLE_SERVICES, True),
        (HANDMADE / "ip_vs_conn", HANDMADE_SERVICES, False),
        (HANDMADE / "ip_vs_conn_old", None, False),
        (HANDMADE / "ip_vs_conn_sync_backup", HANDMADE_SERVICES, True),
    ],
)
def test_real_tables_in_blocks(
    tmp_path: Path, path: Path, services: Any, sync: bool, flt: ConnFilter | None
) -> None:
    kind, _ = both(tmp_path, path.read_bytes(), services, sync=sync, flt=flt)
    assert kind == "summary"


SAMPLE_BYTES = (SAMPLE / "ip_vs_conn").read_bytes()
HEADER, _, BODY = SAMPLE_BYTES.partition(b"\n")
ROWS = BODY.splitlines(keepends=True)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("no newline at the end", SAMPLE_BYTES.rstrip(b"\n")),
        ("CRLF", SAMPLE_BYTES.replace(b"\n", b"\r\n")),
        ("lone CR", SAMPLE_BYTES.replace(b"\n", b"\r")),
        ("blank lines", HEADER + b"\n\n" + b"\n   \n".join(ROWS)),
        ("header only", HEADER + b"\n"),
        ("header without newline", HEADER),
        ("empty", b""),
        ("tabs and form feeds", SAMPLE_BYTES.replace(b" ", b"\t").replace(b"TCP", b"\x0cTCP")),
        ("a short line", HEADER + b"\n" + b"".join(ROWS[:30]) + b"TCP C6336402 1F90\n" + b"".join(ROWS[30:])),
        ("NUL after a client", HEADER + b"\n" + b"".join(ROWS[:40]) + ROWS[40].replace(b" ", b"\0 ", 2)),
        ("NUL in a state", SAMPLE_BYTES.replace(b"ESTABLISHED", b"ESTAB\0ISHED")),
        ("an unknown protocol", SAMPLE_BYTES.replace(b"UDP", b"ICMP", 1)),
    ],
)
def test_odd_files_in_blocks(tmp_path: Path, name: str, data: bytes) -> None:
    got = both(tmp_path, data, SAMPLE_SERVICES)
    if name in ("a short line", "NUL after a client", "an unknown protocol"):
        assert got[0] == "error", name


def test_nul_bytes_are_not_counted_by_columns() -> None:
    """A NUL byte in a field could look like the zero padding of the columns' rows: such a chunk goes
    line by line (a client 'C6336402\\0' is an error there, not the client C6336402)."""
    lines = SAMPLE_BYTES.decode().splitlines(keepends=True)
    f = lines[40].split()
    lines[40] = " ".join([f[0], f[1] + "\0", *f[2:]]) + "\n"
    with by_columns(), pytest.raises(ParseError) as e:
        ConnTable(SAMPLE_SERVICES, max_entries=0).summarize(lines, sync=False, budget_s=None, filters=None)
    assert e.value.line == 41


def test_a_generated_table_in_blocks(tmp_path: Path) -> None:
    """bench/procgen.py's table, 30,000 entries: blocks of 32 KiB growing to 1 MiB."""
    sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
    try:
        from procgen import write
    finally:
        sys.path.pop(0)
    write(tmp_path / "gen", 60, 8, 30_000)
    services = parse_ip_vs((tmp_path / "gen" / "net" / "ip_vs").read_text(), hz=250)
    data = (tmp_path / "gen" / "net" / "ip_vs_conn").read_bytes()
    for flt in (None, ConnFilter(state="established"), ConnFilter(client_prefix=ip_network("198.18.0.0/20"))):
        kind, summary = both(tmp_path / "proc", data, services, flt=flt)
        assert kind == "summary" and summary[5] == 30_000


def test_non_ascii_is_a_source_error_naming_the_file(tmp_path: Path) -> None:
    src = put(tmp_path, SAMPLE_BYTES.replace(b"ESTABLISHED", b"ESTABLISH\xc3\x89D", 1))
    with pytest.raises(SourceError) as by_blocks:
        ConnTable(SAMPLE_SERVICES).summarize(src.conn_lines(), sync=False, budget_s=None, filters=None)
    with pytest.raises(SourceError) as by_lines:
        list(src.conn_lines())
    for e in (by_blocks.value, by_lines.value):
        assert e.kind is IssueKind.IO and str(tmp_path / "net" / "ip_vs_conn") in str(e) and "0xc3" in str(e)


def test_a_budget_stops_a_block_read(tmp_path: Path) -> None:
    """The budget is checked after each block: a read stopped early is partial and closes the file."""
    src = put(tmp_path, SAMPLE_BYTES)
    ticks = iter(range(100))
    lines = src.conn_lines()
    with small_blocks():
        s = ConnTable(SAMPLE_SERVICES).summarize(
            lines, sync=False, budget_s=0.5, filters=None, clock=lambda: float(next(ticks))
        )
    assert s.partial and 0 < s.total < len(ROWS)
    assert lines._f.closed  # type: ignore[attr-defined]
    with small_blocks():  # a budget that ends with the table: not partial
        whole = ConnTable(SAMPLE_SERVICES).summarize(
            src.conn_lines(), sync=False, budget_s=1e9, filters=None, clock=lambda: 0.0
        )
    assert not whole.partial and whole.total == len(ROWS)


def test_lines_and_blocks_are_one_or_the_other(tmp_path: Path) -> None:
    src = put(tmp_path, SAMPLE_BYTES)
    lines = src.conn_lines()
    assert isinstance(lines, ConnFile)
    assert lines.block(10) == HEADER + b"\n"  # at least one whole line
    assert lines.block(1 << 20) == BODY
    assert lines.block(1 << 20) == b""
    lines.close()
    assert list(src.conn_lines()) == SAMPLE_BYTES.decode().splitlines(keepends=True)


# ------------------------------------------------------------------ the services' columns


def rows_of(table: Table) -> tuple[Service, ...]:
    return tuple(ServiceRows(table))


@pytest.mark.parametrize(
    ("ip_vs", "conns", "sync"),
    [
        (SAMPLE / "ip_vs", SAMPLE / "ip_vs_conn", False),
        (SAMPLE / "ip_vs", SAMPLE / "ip_vs_conn_sync", True),
        (HANDMADE / "ip_vs", HANDMADE / "ip_vs_conn", False),
        (HANDMADE / "ip_vs", HANDMADE / "ip_vs_conn_sync_backup", True),
    ],
)
@pytest.mark.parametrize("flt", FILTERS)
def test_services_from_columns_attribute_as_rows_do(
    ip_vs: Path, conns: Path, sync: bool, flt: ConnFilter | None
) -> None:
    """A snapshot's ServiceRows are read from the table's columns: the summary is that of the rows
    (fwmark services, port-zero dests and templates included), and no Dest row is made."""
    table = parse_ip_vs_table(ip_vs.read_bytes(), hz=250)
    lines = conns.read_text().splitlines(keepends=True)
    columns = ServiceRows(table)
    got = outcome(cast(Any, columns), lines, sync=sync, filters=flt)
    assert got == outcome(rows_of(table), lines, sync=sync, filters=flt)
    assert columns._rows == [None] * len(table.services)  # no row was made
    assert got[0] == "summary"
    if flt is None:  # entries mostly attributed to known services: the dest keys were found
        assert 0 <= got[1][7] < got[1][6] // 2


def test_services_from_columns_with_dests_of_port_zero() -> None:
    """The handmade table's fwmark service (dests of port 0) and a template of port 0 tied to its one
    dest: both ways alike."""
    table = Table.from_rows(HANDMADE_SERVICES)
    lines = (HANDMADE / "ip_vs_conn").read_text().splitlines(keepends=True)
    by_cols = outcome(cast(Any, ServiceRows(table)), lines)
    assert by_cols == outcome(HANDMADE_SERVICES, lines)
    assert any(k.is_fwmark for k, _ in by_cols[1][1])


# ------------------------------------------------------------------ the registry's hashing


def test_crowded_slots_and_colliding_hashes(tmp_path: Path) -> None:
    """Rows whose slots collide are found by probing (counted by columns all the same), and rows whose
    hashes collide make their chunk go line by line: the summary does not change either way."""
    data = (SAMPLE / "ip_vs_conn").read_bytes()
    want = both(tmp_path / "a", data, SAMPLE_SERVICES)
    calls: list[bool] = []
    real = conntable._columns

    def spy(*args: Any) -> Any:
        out = real(*args)
        calls.append(out is not None)
        return out

    with mock.patch.object(conntable._Registry, "_home", lambda self, h: np.zeros(len(h), dtype=np.intp)):
        with mock.patch.object(conntable, "_columns", spy):
            assert both(tmp_path / "b", data, SAMPLE_SERVICES) == want
        assert calls and all(calls)
    weak = conntable._hash
    with mock.patch.object(conntable, "_hash", lambda words: weak(words) & np.uint64(3)):
        assert both(tmp_path / "c", data, SAMPLE_SERVICES) == want
