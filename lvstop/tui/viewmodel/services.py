"""The services view: one row per virtual service."""

from __future__ import annotations

from collections.abc import Sequence

from lvstop.model import Service, ServiceKey, Snapshot
from lvstop.tui import units
from lvstop.tui.viewmodel.columns import dest_texts, service_sums
from lvstop.tui.viewmodel.health import (
    SERVICE_HEALTH_COLUMN,
    HealthMap,
    row_states,
    service_counts,
    service_health,
)
from lvstop.tui.viewmodel.history import TREND_WIDTH, History, with_trend_scale
from lvstop.tui.viewmodel.labels import (
    Names,
    addr_order,
    no_names,
    rates_of,
    service_flags,
    service_id,
    vip_label,
)
from lvstop.tui.viewmodel.managers import MANAGED_COLUMN, ManagedMap, managed_cell
from lvstop.tui.viewmodel.settings import ViewSettings
from lvstop.tui.viewmodel.table import Column, Row, RowCache, TableModel, finish_table, matches
from lvstop.tui.viewmodel.tones import ACCENT, BAD, DRAINED

SERVICE_COLUMNS: tuple[Column, ...] = (
    Column("proto", "Proto", numeric=False, priority=2),
    Column("service", "Virtual service", numeric=False, priority=0),
    Column("sched", "Sched", numeric=False, priority=6),
    Column("flags", "Flags", numeric=False, priority=12, shrink=True),
    Column("dests", "Live", priority=3),
    Column("active", "Active", priority=1),
    Column("inactive", "InAct", priority=5),
    Column("persist", "Persist", priority=10),
    Column("cps", "Conn/s", priority=1),
    Column("inpps", "InPkt/s", priority=8),
    Column("outpps", "OutPkt/s", priority=9),
    Column("inbps", "In B/s", priority=4),
    Column("outbps", "Out B/s", priority=7),
    Column("conns", "Conns", priority=11),
    Column("trend", "Trend", numeric=False, priority=4, sortable=False),
)
_EXTRA_AT = 5  # columns only some directors have go right after Live: Health, then Managed by


def services_table(
    snap: Snapshot | None,
    settings: ViewSettings,
    history: History,
    names: Names = no_names,
    health: HealthMap | None = None,
    managed: ManagedMap | None = None,
    cache: RowCache | None = None,
) -> TableModel:
    """One row per service; with `health` (checks configured) a Health column after Live, and a Managed
    by column when keepalived or ldirectord manages one of the services. `cache` keeps the rows for the next
    build, which reuses those whose inputs are equal."""
    if snap is None:
        return TableModel(SERVICE_COLUMNS, empty="waiting for the first poll…")
    human, needle = settings.human, settings.services_filter.strip().lower()
    table = snap.table  # the services' own rows and the dests' columns: no row per dest is made
    sums = service_sums(table)
    top = units.trend_top(history.service(s.key) for s in table.services)
    managed = managed or {}
    counts = service_counts(table, row_states(health, table)) if health is not None else None
    shows_managed = any(s.key in managed for s in table.services)
    entries: list[tuple[Sequence[object], Row]] = []
    context = (human, settings.instant, top, shows_managed, counts is not None)
    old = cache.rows if cache is not None and cache.context == context else {}
    kept: dict[ServiceKey, tuple[object, str, tuple[object, ...], Row]] = {}
    for i, svc in enumerate(table.services):
        key = svc.key
        label = vip_label(key, names)
        checked = service_health(counts, i) if counts is not None else None  # counted from columns
        owner = managed_cell(managed.get(key, ()))
        live, total = int(sums.live[i]), int(sums.dests[i])
        active, inactive, persist = int(sums.active[i]), int(sums.inactive[i]), sums.persist_of(i)
        trend = tuple(history.service(key))
        inputs = (svc, label, checked, owner, live, total, active, inactive, persist, trend)
        hit = old.get(key)
        if hit is not None and hit[0] == inputs:  # formatting is most of a build: only what changed
            flags, raw, row = hit[1:]
        else:
            flags = service_flags(svc)
            if svc.error:
                flags = (flags + " " if flags else "") + "read incomplete"
            raw, row = _service_row(
                svc, label, flags, checked, owner, shows_managed, (live, total, active, inactive, persist),
                trend, top, settings,
            )  # fmt: skip
        kept[key] = (inputs, flags, raw, row)
        if needle and not (
            matches(
                needle,
                (
                    label,
                    vip_label(key),
                    key.protocol.label,
                    svc.scheduler,
                    flags,
                    checked[0] if checked else "",
                    owner,
                ),
            )
            or matches(needle, dest_texts(table, i))
        ):
            continue
        entries.append((raw, row))
    if cache is not None:
        cache.context, cache.rows = context, kept
    empty = "no virtual services on this director" if not table.services else "no service matches the filter"
    columns = SERVICE_COLUMNS
    if shows_managed:
        columns = (*columns[:_EXTRA_AT], MANAGED_COLUMN, *columns[_EXTRA_AT:])
    if health is not None:
        columns = (*columns[:_EXTRA_AT], SERVICE_HEALTH_COLUMN, *columns[_EXTRA_AT:])
    columns = with_trend_scale(columns, top, human)
    return finish_table(columns, entries, settings.services_sort, len(table.services), empty)


def _service_row(
    svc: Service,
    label: str,
    flags: str,
    checked: tuple[str, str, tuple[int, int, int]] | None,
    owner: str,
    shows_managed: bool,
    counts: tuple[int, int, int, int, int | None],
    trend: Sequence[float],
    top: float,
    settings: ViewSettings,
) -> tuple[tuple[object, ...], Row]:
    """A service's row and the raw values it sorts by."""
    key, human = svc.key, settings.human
    live, total, active, inactive, persist = counts
    r = rates_of(svc, settings.instant)
    conns = svc.counters.conns if svc.counters else None
    tone, dests_tone = "", ""
    if svc.error:
        tone = BAD
    elif live == 0:
        tone = dests_tone = BAD  # traffic to this VIP has nowhere to go
    elif live < total:
        dests_tone = DRAINED
    cells: tuple[str, ...] = (
        key.protocol.label,
        label,
        svc.scheduler,
        flags,
        f"{live}/{total}" if not svc.error else f"{live}/{total}?",
        units.count(active, human=human),
        units.count(inactive, human=human),
        units.count(persist, human=human),
        units.count(r.cps if r else None, human=human),
        units.count(r.inpps if r else None, human=human),
        units.count(r.outpps if r else None, human=human),
        units.nbytes(r.inbps if r else None, human=human),
        units.nbytes(r.outbps if r else None, human=human),
        units.count(conns, human=human),
        units.sparkline(trend, TREND_WIDTH, top),
    )
    raw: tuple[object, ...] = (
        key.protocol.label,
        addr_order(key.family, key.address, key.port) if not key.is_fwmark else (key.family, b"", key.fwmark),
        svc.scheduler,
        flags,
        _degraded(live, total),
        active,
        inactive,
        -1 if persist is None else persist,
        *((r.cps, r.inpps, r.outpps, r.inbps, r.outbps) if r else (-1.0,) * 5),
        -1 if conns is None else conns,
        0,
    )
    # The trend in the accent colour, as the header's: bars in the text colour read as blocks.
    cell_tones: tuple[str, ...] = ("", "", "", "", dests_tone) + ("",) * 9 + (ACCENT,)
    at = _EXTRA_AT
    if shows_managed:
        cells = (*cells[:at], owner, *cells[at:])
        raw = (*raw[:at], owner, *raw[at:])
        cell_tones = (*cell_tones[:at], ACCENT, *cell_tones[at:])
    if checked is not None:
        cells = (*cells[:at], checked[0], *cells[at:])
        raw = (*raw[:at], checked[2], *raw[at:])
        cell_tones = (*cell_tones[:at], checked[1], *cell_tones[at:])
    return raw, Row(service_id(key), cells, tone, cell_tones)


def _degraded(live: int, dests: int) -> tuple[bool, float, int]:
    """How the Live column sorts, hottest first: no live dest at all, then the largest share and number
    of dests at weight 0 (a 2/3 service before a 9/10 one, both before 3/3)."""
    down = dests - live
    return (dests > 0 and live == 0, down / dests if dests else 0.0, down)
