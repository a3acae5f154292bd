"""The header above every view: who and how the poll goes, director totals with sparklines, counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lvstop.model import Snapshot
from lvstop.tui import units
from lvstop.tui.viewmodel.columns import service_sums
from lvstop.tui.viewmodel.health import HealthMap, health_counts, row_states
from lvstop.tui.viewmodel.history import History
from lvstop.tui.viewmodel.settings import ViewSettings
from lvstop.tui.viewmodel.tones import ACCENT, BAD, DIM, DRAINED, GOOD, WARN, Span


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a header line; the widget drops the highest `drop` first when the line is too narrow."""

    spans: tuple[Span, ...]
    drop: int = 0

    @property
    def width(self) -> int:
        return sum(len(t) for t, _ in self.spans)


@dataclass(frozen=True, slots=True)
class PollHealth:
    """What the poller says about itself, read on the UI thread (attribute reads only)."""

    last_error: str | None
    last_duration: float | None
    age: float | None  # seconds since the last good poll started
    interval: float

    @property
    def stale(self) -> bool:
        return self.age is not None and self.age > 3 * self.interval + 1


def status_chunks(
    health: PollHealth, settings: ViewSettings, *, paused: bool, mode: str = "", live: bool = True
) -> tuple[Chunk, ...]:
    """The live end of the first header line, rebuilt every second on the UI thread (cheap).

    `live` is False for a replay that is paused or at its end: its data is old on purpose, not stale.
    """
    out: list[Chunk] = []
    if health.last_error is not None:
        out.append(Chunk((("  POLL FAILING", BAD),)))
    elif health.stale and live:
        out.append(Chunk(((f"  STALE {units.duration(health.age)}", WARN),)))
    else:
        age = (f" {units.duration(health.age)} ago", DIM)
        out.append(Chunk(((f"  poll {units.duration(health.last_duration)}", ""), age), drop=3))
    out.append(Chunk(((f"  every {units.duration(health.interval)}", DIM),), drop=4))
    if settings.instant:
        out.append(Chunk((("  instant rates", ACCENT),), drop=2))
    if mode:
        out.append(Chunk(((f"  {mode}", ACCENT),), drop=1))
    if paused:
        out.append(Chunk((("  PAUSED", WARN),)))
    return tuple(out)


def header_lines(
    snap: Snapshot | None, history: History, settings: ViewSettings, health: HealthMap | None = None
) -> list[tuple[Chunk, ...]]:
    """Who (the status chunks follow it); director totals with sparklines; counts, health (when checks
    run), sync, timeouts.

    Built off the UI thread: the counts sum the dests' columns.
    """
    human = settings.human
    first: list[Chunk] = []
    if snap is None:
        first.append(Chunk((("lvstop", ACCENT), ("  waiting for the first poll…", DIM))))
    else:
        first.append(Chunk(((snap.director, ACCENT), (f" [{snap.source}]", DIM))))
        if snap.version:
            first.append(Chunk(((f"  IPVS {snap.version}", ""),), drop=5))
        if snap.conn_tab_size:
            first.append(Chunk(((f"  conn tab {snap.conn_tab_size}", DIM),), drop=6))
    lines = [tuple(first)]

    second: list[Chunk] = []
    rates = None if snap is None else (snap.total_instant if settings.instant else snap.total_rates)
    if rates is not None:
        second.append(
            Chunk(
                (
                    ("conn/s ", DIM),
                    (units.count(rates.cps, human=human), ""),
                    (" " + _spark(history.total(History.TOTAL_CPS)), ACCENT),
                )
            )
        )
        second.append(
            Chunk(
                (
                    ("  pkt/s in ", DIM),
                    (units.count(rates.inpps, human=human), ""),
                    (" out ", DIM),
                    (units.count(rates.outpps, human=human), ""),
                    (" " + _spark(history.total(History.TOTAL_PPS)), ACCENT),
                ),
                drop=2,
            )
        )
        second.append(
            Chunk(
                (
                    ("  B/s in ", DIM),
                    (units.nbytes(rates.inbps, human=human), ""),
                    (" out ", DIM),
                    (units.nbytes(rates.outbps, human=human), ""),
                    (" " + _spark(history.total(History.TOTAL_BPS)), ACCENT),
                ),
                drop=1,
            )
        )
    elif snap is not None:
        second.append(Chunk((("director totals: no rates yet", DIM),)))
    lines.append(tuple(second))

    third: list[Chunk] = []
    if snap is not None:
        table = snap.table
        sums = service_sums(table)
        services, dests = len(table.services), len(table.dests)
        drained = int((table.dests.weight == 0).sum())
        dead = int((sums.live == 0).sum())
        third.append(Chunk(((f"{services} services, {dests} dests", ""),)))
        if drained:
            third.append(Chunk(((f", {drained} at weight 0", DRAINED),), drop=1))
        if dead:
            third.append(Chunk(((f", {dead} with no live dest", BAD),)))
        if health is not None:
            counts, alarm = health_counts(table, row_states(health, table))
            if alarm:
                third.append(Chunk(alarm))
            third.append(Chunk(counts, drop=1))
        if snap.daemons:
            sync = " ".join(f"{d.state.name.lower()}:{d.mcast_ifn}/{d.syncid}" for d in snap.daemons)
            third.append(Chunk((("  sync ", DIM), (sync, GOOD)), drop=2))
        else:
            unseen = snap.daemons is None  # /proc cannot see them
            third.append(Chunk((("  sync ", DIM), ("?" if unseen else "none", WARN)), drop=2))
        if snap.timeouts is not None:
            t = snap.timeouts
            third.append(
                Chunk((("  timeouts ", DIM), (f"tcp {t.tcp} fin {t.tcpfin} udp {t.udp}", "")), drop=3)
            )
        if not snap.ok:
            third.append(Chunk(((f"  {len(snap.issues)} read issue(s)", WARN),)))
    lines.append(tuple(third))
    return lines


def _spark(series: Sequence[float], width: int = 16) -> str:
    """Header sparklines grow from the left until full: no padding pushing them away from their number."""
    return units.sparkline(series, min(width, len(series)))


def fit_chunks(chunks: Sequence[Chunk], width: int) -> list[Chunk]:
    """Drop the most droppable chunks until the line fits; keep the order of the rest."""
    kept = list(chunks)
    while kept and sum(c.width for c in kept) > width:
        worst = max(range(len(kept)), key=lambda i: (kept[i].drop, i))
        if kept[worst].drop == 0 and len(kept) == 1:
            break
        del kept[worst]
    return kept
