"""Several directors side by side: each in a few numbers, then their busiest services."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from lvstop.model import ServiceKey, Snapshot
from lvstop.tui import units
from lvstop.tui.viewmodel.columns import service_sums
from lvstop.tui.viewmodel.header import PollHealth
from lvstop.tui.viewmodel.labels import service_id
from lvstop.tui.viewmodel.table import Column, Row, TableModel, finish_table
from lvstop.tui.viewmodel.tones import ACCENT, BAD, DIM, GOOD, WARN

SIDE_SERVICES = 40  # per-service rows: the busiest of each director


@dataclass(frozen=True, slots=True)
class Brief:
    """One director in a few numbers, for the side-by-side tab (built off the UI thread)."""

    director: str
    role: str
    services: int
    dests: int
    at_zero: int
    active: int
    inactive: int
    cps: float | None
    conns: Mapping[ServiceKey, tuple[int, int]]  # active, inactive per service
    busiest: tuple[ServiceKey, ...]


def brief(snap: Snapshot | None) -> Brief | None:
    if snap is None:
        return None
    table = snap.table
    sums = service_sums(table)
    conns = {
        s.key: (a, i)
        for s, a, i in zip(table.services, sums.active.tolist(), sums.inactive.tolist(), strict=True)
    }
    role = ", ".join(f"{d.state.name.lower()} {d.mcast_ifn}/{d.syncid}" for d in snap.daemons or ()) or (
        "no sync" if snap.daemons is not None else "sync unknown"
    )
    busiest = sorted(conns, key=lambda k: (-(conns[k][0] + conns[k][1]), k))[:SIDE_SERVICES]
    return Brief(
        snap.director,
        role,
        len(table.services),
        len(table.dests),
        int((table.dests.weight == 0).sum()),
        sum(a for a, _ in conns.values()),
        sum(i for _, i in conns.values()),
        snap.total_rates.cps if snap.total_rates is not None else None,
        MappingProxyType(conns),
        tuple(busiest),
    )


def side_by_side(directors: Sequence[tuple[str, Brief | None, PollHealth]], human: bool = True) -> TableModel:
    """Rows of figures, one column per director: roles and totals, then the busiest services' conns."""
    cols = [Column("what", "", numeric=False, priority=0, sortable=False)]
    cols += [Column(f"d{i}", label, priority=1, sortable=False) for i, (label, _, _) in enumerate(directors)]
    rows: list[tuple[Sequence[object], Row]] = []

    def add(key: str, title: str, cells: list[str], tone: str = "", tones: tuple[str, ...] = ()) -> None:
        rows.append(((), Row(key, (title, *cells), tone, ("", *tones) if tones else ())))

    briefs = [b for _, b, _ in directors]
    add("director", "director", [b.director if b else "-" for b in briefs], ACCENT)
    add(
        "role",
        "sync daemon",
        [b.role if b else "-" for b in briefs],
        tones=tuple(GOOD if b and b.role != "no sync" else WARN for b in briefs),
    )
    add(
        "poll",
        "poll",
        [_poll_word(h) for _, _, h in directors],
        tones=tuple(BAD if h.last_error else WARN if h.stale else "" for _, _, h in directors),
    )
    figures: list[tuple[str, str, Callable[[Brief], str]]] = [
        ("services", "services", lambda b: units.count(b.services, human=human)),
        ("dests", "dests (weight 0)", lambda b: f"{units.count(b.dests, human=human)} ({b.at_zero})"),
        ("active", "active conns", lambda b: units.count(b.active, human=human)),
        ("inactive", "inactive conns", lambda b: units.count(b.inactive, human=human)),
        ("cps", "conn/s", lambda b: units.count(b.cps, human=human)),
    ]
    for key, title, get in figures:
        add(key, title, [get(b) if b else "-" for b in briefs])
    seen: dict[ServiceKey, None] = {}
    for b in briefs:
        for k in b.busiest if b else ():
            seen.setdefault(k)
    if seen:
        add("per-service", "active / inactive", ["" for _ in briefs], DIM)
    for k in seen:
        cells = []
        for b in briefs:
            pair = b.conns.get(k) if b else None
            cells.append(
                "-"
                if pair is None
                else f"{units.count(pair[0], human=human)} / {units.count(pair[1], human=human)}"
            )
        add(service_id(k), str(k), cells)
    return finish_table(tuple(cols), rows, None, len(rows), "waiting for the directors")


def _poll_word(h: PollHealth) -> str:
    if h.last_error:
        return "FAILING"
    if h.stale:
        return f"stale {units.duration(h.age)}"
    return f"ok {units.duration(h.age)} ago" if h.age is not None else "waiting"
