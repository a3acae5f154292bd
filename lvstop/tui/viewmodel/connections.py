"""The connections view: the connection table by state, dest and client, and its entries."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from lvstop.conntable import ConnSummary
from lvstop.model import DestKey, ServiceKey, format_hostport
from lvstop.tui import units
from lvstop.tui.viewmodel.labels import Names, addr_order, host_label, no_names
from lvstop.tui.viewmodel.settings import SortSpec
from lvstop.tui.viewmodel.table import Column, Row, TableModel, finish_table
from lvstop.tui.viewmodel.tones import ACCENT, BAD, DIM, WARN, Span

CONN_STATE_COLUMNS: tuple[Column, ...] = (
    Column("state", "State", numeric=False, priority=0, sortable=False),
    Column("entries", "Entries", priority=0, sortable=False),
)
CONN_DEST_COLUMNS: tuple[Column, ...] = (
    Column("dest", "Real server", numeric=False, priority=0, sortable=False),
    Column("active", "Active", priority=1, sortable=False),
    Column("inactive", "InAct", priority=2, sortable=False),
    Column("templates", "Templ", priority=3, sortable=False),
    Column("service", "Service", numeric=False, priority=4, sortable=False),
)
CONN_CLIENT_COLUMNS: tuple[Column, ...] = (
    Column("client", "Top client", numeric=False, priority=0, sortable=False),
    Column("entries", "Entries", priority=0, sortable=False),
)
CONN_ENTRY_COLUMNS: tuple[Column, ...] = (
    Column("proto", "Pro", numeric=False, priority=3, sortable=False),
    Column("client", "Client", numeric=False, priority=0, sortable=False),
    Column("state", "State", numeric=False, priority=1, sortable=False),
    Column("expires", "Expires", priority=2, sortable=False),
    Column("dest", "Real server", numeric=False, priority=0, sortable=False),
    Column("virtual", "Virtual", numeric=False, priority=4, sortable=False),
    Column("origin", "Origin", numeric=False, priority=5, sortable=False),
)


@dataclass(frozen=True, slots=True)
class ConnQuery:
    """What the connections view asks of the table: scope from navigation, the rest from `/`."""

    service: ServiceKey | None = None
    dest: DestKey | None = None
    client: str = ""  # an address or a prefix (CIDR)
    state: str = ""
    protocol: str = ""


_CONN_PROTOCOLS = ("TCP", "UDP", "SCTP", "IP")


def parse_conn_filter(text: str, base: ConnQuery) -> ConnQuery:
    """`/` in the connections view: words are a client address or prefix, a protocol, or a state."""
    client = state = protocol = ""
    for word in text.split():
        if word.upper() in _CONN_PROTOCOLS:
            protocol = word.upper()
            continue
        try:
            ipaddress.ip_network(word, strict=False)
        except ValueError:
            if not word.replace("_", "").isalpha():
                raise ValueError(f"{word!r} is neither an address, a protocol nor a state") from None
            state = word.upper()
        else:
            client = word
    return ConnQuery(base.service, base.dest, client, state, protocol)


def conn_query_text(q: ConnQuery) -> str:
    parts = [f"service {q.service}" if q.service else "", f"dest {q.dest}" if q.dest else ""]
    parts += [f"client {q.client}" if q.client else "", q.state, q.protocol]
    return ", ".join(p for p in parts if p) or "whole table"


@dataclass(frozen=True, slots=True)
class ConnViews:
    line: tuple[Span, ...]
    states: TableModel
    dests: TableModel
    clients: TableModel
    entries: TableModel
    dest_keys: Mapping[str, tuple[ServiceKey, DestKey]]


def conn_views(
    summary: ConnSummary | None,
    query: ConnQuery,
    *,
    error: str | None,
    age: float | None,
    human: bool,
    names: Names = no_names,
) -> ConnViews:
    """The connections view from a lvstop.conntable.ConnSummary (None until the first read)."""
    line: list[Span] = [(conn_query_text(query), ACCENT)]
    if error is not None:
        line.append((f"  read failed: {error}", BAD))
    if summary is None:
        line.append(("  reading the connection table…" if error is None else "", DIM))
        empty = TableModel(CONN_ENTRY_COLUMNS, empty="no read yet")
        return ConnViews(
            tuple(line),
            TableModel(CONN_STATE_COLUMNS),
            TableModel(CONN_DEST_COLUMNS),
            TableModel(CONN_CLIENT_COLUMNS),
            empty,
            MappingProxyType({}),
        )
    ov = summary.overall
    if summary.partial:  # first: at 80 columns the end of the line is cut
        line.append(("  PARTIAL: the read hit its time budget, counts are low", WARN))
    line.append(
        (
            f"  {units.count(summary.matched, human=human)} of "
            f"{units.count(summary.total, human=human)} entries",
            "",
        )
    )
    n = {
        k: units.count(v, human=human) for k, v in (("a", ov.active), ("i", ov.inactive), ("t", ov.templates))
    }
    line.append((f", {n['a']} active, {n['i']} inactive, {n['t']} templates", ""))
    line.append((f"  read in {units.duration(summary.read_seconds)}", DIM))
    if age is not None:
        line.append((f", {units.duration(age)} ago", DIM))
    if summary.unattributed:
        line.append((f"  {summary.unattributed} of no known service", WARN))

    states: list[tuple[Sequence[object], Row]] = [
        ((s, n), Row(s, (s, units.count(n, human=human)))) for s, n in ov.states.items()
    ]
    if ov.templates:
        states.append(
            (
                ("~templates", ov.templates),
                Row("templates", ("(templates)", units.count(ov.templates, human=human)), DIM),
            )
        )
    state_model = finish_table(
        CONN_STATE_COLUMNS, states, SortSpec("entries", True), len(states), "no entries"
    )

    dest_rows: list[tuple[Sequence[object], Row]] = []
    dest_keys: dict[str, tuple[ServiceKey, DestKey]] = {}
    for (skey, dkey), c in summary.by_dest.items():
        rid = f"{skey} {dkey}"
        dest_keys[rid] = (skey, dkey)
        dest_cells = (
            host_label(dkey.family, dkey.address, dkey.port, names),
            units.count(c.active, human=human),
            units.count(c.inactive, human=human),
            units.count(c.templates, human=human),
            str(skey),
        )
        order = addr_order(dkey.family, dkey.address, dkey.port)
        dest_rows.append(((order, c.active, c.inactive, c.templates, str(skey)), Row(rid, dest_cells)))
    dest_model = finish_table(
        CONN_DEST_COLUMNS, dest_rows, SortSpec("active", True), len(dest_rows), "no entries"
    )

    client_rows: list[tuple[Sequence[object], Row]] = [
        ((addr, n), Row(addr, (names(addr) or addr, units.count(n, human=human))))
        for addr, n in summary.top_clients
    ]
    client_model = finish_table(
        CONN_CLIENT_COLUMNS, client_rows, SortSpec("entries", True), len(client_rows), "no clients"
    )

    entry_rows: list[tuple[Sequence[object], Row]] = []
    for i, e in enumerate(summary.entries):
        fam = 10 if ":" in e.client else 2
        dfam = 10 if ":" in e.daddr else 2
        vfam = 10 if ":" in e.vaddr else 2
        entry_cells = (
            e.protocol,
            host_label(fam, e.client, e.client_port, names) if e.client_port else f"{e.client} (template)",
            e.state,
            units.duration(e.expires),
            host_label(dfam, e.daddr, e.dport, names),
            format_hostport(vfam, e.vaddr, e.vport),
            e.origin or e.pe_name,
        )
        entry_rows.append(
            (
                (i, e.client, e.state, e.expires, e.daddr, e.vaddr, e.origin or ""),
                Row(str(i), entry_cells, DIM if e.is_template else ""),
            )
        )
    more = "" if summary.matched <= len(summary.entries) else f" (first {len(summary.entries)} shown)"
    entry_model = finish_table(
        CONN_ENTRY_COLUMNS,
        entry_rows,
        SortSpec("proto", False),
        summary.matched,
        "no connection matches" + more,
    )
    return ConnViews(
        tuple(line), state_model, dest_model, client_model, entry_model, MappingProxyType(dest_keys)
    )
