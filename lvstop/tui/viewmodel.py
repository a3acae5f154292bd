"""Snapshot -> what the screens show: sorted, filtered, formatted rows, header chunks, drain notes.

Pure and free of Textual so that it runs off the UI thread (the feed's builder thread) and in tests.
Cells carry display strings; sorting uses the raw numbers, never the strings.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from lvstop import explain
from lvstop.conntable import ConnSummary
from lvstop.model import (
    EXPLAINING_SYSCTLS,
    TUN_F_CSUM,
    TUN_F_REMCSUM,
    Dest,
    DestKey,
    FwdMethod,
    Protocol,
    Rates,
    Service,
    ServiceKey,
    Snapshot,
    TunType,
    format_hostport,
)
from lvstop.tui import units

if TYPE_CHECKING:
    from lvstop.events import Event

# Tones name what a cell means; the stylesheet maps them to colours and NO_COLOR still leaves the text.
GOOD, WARN, BAD, DRAINED, DIM, ACCENT = "good", "warn", "bad", "drained", "dim", "accent"

TREND_WIDTH = 10
DRAIN_DEPTH = 30  # polls of a drain's active connections kept for its note (a minute at 2 s)
HISTORY_DEPTH = 120  # samples: 4 minutes at the default 2 s tick
IMBALANCE_POINTS = 15.0  # weight share vs traffic share gap (percentage points) worth a warning
IMBALANCE_MIN_CPS = 5.0  # below this many conns/s the shares are noise

Names = Callable[[str], str | None]  # address -> resolved name, None while unknown


def no_names(_address: str) -> str | None:
    return None


@dataclass(frozen=True, slots=True)
class Column:
    id: str
    title: str
    numeric: bool = True  # right-aligned; sorting starts descending
    priority: int = 0  # columns with the highest priority number go first when the table is narrow
    sortable: bool = True
    shrink: bool = False  # text that may be cut short (…) rather than dropped when the table is narrow


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    cells: tuple[str, ...]
    tone: str = ""
    cell_tones: tuple[str, ...] = ()  # per cell; "" falls back to the row's tone


@dataclass(frozen=True, slots=True)
class SortSpec:
    column: str
    reverse: bool

    def toggled(self, column: Column) -> SortSpec:
        """A header click: same column flips the order, a new one starts hottest/first."""
        if column.id == self.column:
            return SortSpec(column.id, not self.reverse)
        return SortSpec(column.id, column.numeric)


@dataclass(frozen=True, slots=True)
class TableModel:
    columns: tuple[Column, ...]
    rows: tuple[Row, ...] = ()
    widths: tuple[int, ...] = ()
    index: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    sort: SortSpec | None = None
    total: int = 0  # rows before the filter
    empty: str = "nothing to show"

    def column(self, column_id: str) -> Column | None:
        for c in self.columns:
            if c.id == column_id:
                return c
        return None


@dataclass(frozen=True, slots=True)
class ViewSettings:
    """Everything the user chose that changes what the tables show."""

    human: bool = True
    names: bool = False
    instant: bool = False
    services_sort: SortSpec = SortSpec("cps", True)
    dests_sort: SortSpec = SortSpec("address", False)
    events_sort: SortSpec = SortSpec("time", True)
    services_filter: str = ""
    dests_filter: str = ""
    events_filter: str = ""
    service: ServiceKey | None = None  # the drilled-down service


Span = tuple[str, str]  # (text, tone)


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


# --- history (sparklines) -------------------------------------------------------------------------


class History:
    """Ring buffers of conns/s per service, per dest and for the director, fed once per poll.

    Dests are keyed by (address, port) inside their service's dict: hashing a frozen dataclass key
    per dest per poll cost most of a build at 100k dests.
    """

    TOTAL_CPS, TOTAL_PPS, TOTAL_BPS = "total-cps", "total-pps", "total-bps"

    def __init__(self, depth: int = HISTORY_DEPTH, trend_depth: int = TREND_WIDTH) -> None:
        self._depth = depth
        self._trend_depth = trend_depth
        self._services: dict[ServiceKey, deque[float]] = {}
        self._dests: dict[ServiceKey, dict[tuple[str, int], deque[float]]] = {}
        self._totals: dict[str, deque[float]] = {}
        self._draining: dict[tuple[ServiceKey, str, int], deque[float]] = {}  # active conns of weight-0 dests
        self._seq: int | None = None

    def record(self, snap: Snapshot) -> None:
        if snap.seq == self._seq:
            return
        self._seq = snap.seq
        depth = self._trend_depth
        services, dests = self._services, self._dests
        draining: dict[tuple[ServiceKey, str, int], deque[float]] = {}
        for svc in snap.services:
            skey = svc.key
            _push(services, skey, svc.rates, depth)
            inner = dests.get(skey)
            if inner is None:
                inner = dests[skey] = {}
            for d in svc.dests:
                r = d.rates
                buf = inner.get((d.address, d.port))
                if buf is None:
                    buf = inner[(d.address, d.port)] = deque(maxlen=depth)
                if r is not None:  # no rate yet (first poll, counters reset): a gap, not a dip to zero
                    buf.append(r.cps)
                if d.weight == 0:  # drains are few: follow their active connections too
                    key = (skey, d.address, d.port)
                    drain = draining[key] = self._draining.get(key) or deque(maxlen=DRAIN_DEPTH)
                    drain.append(d.active_conns)
            if len(inner) > 2 * len(svc.dests) + 4:  # dests came and went: forget the gone ones
                keep = {(d.address, d.port) for d in svc.dests}
                dests[skey] = {k: v for k, v in inner.items() if k in keep}
        self._draining = draining
        if len(services) > 2 * len(snap.services) + 4:
            keep_s = {s.key for s in snap.services}
            self._services = {k: v for k, v in services.items() if k in keep_s}
            self._dests = {k: v for k, v in dests.items() if k in keep_s}
        tr = snap.total_rates
        if tr is not None:
            for name, value in (
                (self.TOTAL_CPS, tr.cps),
                (self.TOTAL_PPS, tr.inpps + tr.outpps),
                (self.TOTAL_BPS, tr.inbps + tr.outbps),
            ):
                self._totals.setdefault(name, deque(maxlen=self._depth)).append(value)

    def copy(self) -> History:
        other = History(self._depth, self._trend_depth)
        other._services = {k: deque(v, maxlen=v.maxlen) for k, v in self._services.items()}
        other._dests = {
            k: {dk: deque(v, maxlen=v.maxlen) for dk, v in inner.items()} for k, inner in self._dests.items()
        }
        other._totals = {k: deque(v, maxlen=v.maxlen) for k, v in self._totals.items()}
        other._draining = {k: deque(v, maxlen=v.maxlen) for k, v in self._draining.items()}
        other._seq = self._seq
        return other

    def service(self, key: ServiceKey) -> Sequence[float]:
        return self._services.get(key, ())

    def dest(self, skey: ServiceKey, dkey: DestKey) -> Sequence[float]:
        return self._dests.get(skey, {}).get((dkey.address, dkey.port), ())

    def draining(self, skey: ServiceKey, dkey: DestKey) -> Sequence[float]:
        """Active connections of a weight-0 dest, poll by poll since it went to 0 (last DRAIN_DEPTH)."""
        return self._draining.get((skey, dkey.address, dkey.port), ())

    def total(self, name: str) -> Sequence[float]:
        return self._totals.get(name, ())


def _push(series: dict[ServiceKey, deque[float]], key: ServiceKey, r: Rates | None, depth: int) -> None:
    buf = series.get(key)
    if buf is None:
        buf = series[key] = deque(maxlen=depth)
    if r is not None:
        buf.append(r.cps)


# --- helpers ----------------------------------------------------------------------------------------


def service_id(key: ServiceKey) -> str:
    return str(key)


def dest_id(key: DestKey) -> str:
    return str(key)


def _addr_order(family: int, address: str, port: int) -> tuple[int, bytes, int]:
    try:
        packed = ipaddress.ip_address(address).packed
    except ValueError:
        packed = address.encode()
    return (family, packed, port)


def _host(family: int, address: str, port: int, names: Names) -> str:
    name = names(address)
    if name is None:
        return format_hostport(family, address, port)
    return f"{name}:{port}"


def vip_label(key: ServiceKey, names: Names = no_names) -> str:
    if key.is_fwmark:
        return f"mark {key.fwmark}" + (" v6" if key.family == 10 else "")
    return _host(key.family, key.address, key.port, names)


def service_flags(svc: Service) -> str:
    parts: list[str] = []
    if svc.persistent:
        part = f"persist {svc.timeout}s"
        full = 128 if svc.key.family == 10 else 32
        if svc.prefix_len != full:
            part += f" /{svc.prefix_len}"
        parts.append(part)
    if svc.one_packet:
        parts.append("ops")
    parts.extend(svc.sched_flags())
    if svc.pe_name:
        parts.append(f"pe {svc.pe_name}")
    return " ".join(parts)


def tunnel_label(d: Dest) -> str:
    if d.fwd is not FwdMethod.TUNNEL:
        return ""
    if d.tun_type is None or d.tun_flags is None:
        return "?"  # read from /proc: the tunnel type is unknown
    label = d.tun_type.name.lower()
    if d.tun_type is TunType.GUE and d.tun_port:
        label += f":{d.tun_port}"
    if d.tun_flags & TUN_F_CSUM:
        label += " csum"
    if d.tun_flags & TUN_F_REMCSUM:
        label += " remcsum"
    return label


def _rates(obj: Service | Dest, instant: bool) -> Rates | None:
    return obj.instant if instant else obj.rates


def live_dests(svc: Service) -> int:
    return sum(1 for d in svc.dests if d.weight > 0)


def _matches(needle: str, haystack: Iterable[str]) -> bool:
    return any(needle in h.lower() for h in haystack)


def _finish(
    columns: tuple[Column, ...],
    entries: list[tuple[Sequence[object], Row]],
    sort: SortSpec | None,
    total: int,
    empty: str,
) -> TableModel:
    """Sort rows by the raw value of the sort column (key breaks ties), measure widths, index keys.

    With `sort` None the rows keep the order they came in (the connection table's own order).
    """
    ids = [c.id for c in columns]
    if sort is not None:
        col = ids.index(sort.column) if sort.column in ids else 0
        sort = SortSpec(ids[col], sort.reverse)
        entries.sort(key=lambda e: e[1].key)
        entries.sort(key=lambda e: e[0][col], reverse=sort.reverse)  # type: ignore[arg-type,return-value]
    rows = tuple(row for _, row in entries)
    widths = [len(c.title) for c in columns]
    for row in rows:
        for i, cell in enumerate(row.cells):
            if len(cell) > widths[i]:
                widths[i] = len(cell)
    index = MappingProxyType({row.key: i for i, row in enumerate(rows)})
    return TableModel(columns, rows, tuple(widths), index, sort, total, empty)


# --- services ---------------------------------------------------------------------------------------

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


def services_table(
    snap: Snapshot | None, settings: ViewSettings, history: History, names: Names = no_names
) -> TableModel:
    if snap is None:
        return TableModel(SERVICE_COLUMNS, empty="waiting for the first poll…")
    human, needle = settings.human, settings.services_filter.strip().lower()
    top = units.trend_top(history.service(s.key) for s in snap.services)
    entries: list[tuple[Sequence[object], Row]] = []
    for svc in snap.services:
        key = svc.key
        label = vip_label(key, names)
        flags = service_flags(svc)
        if svc.error:
            flags = (flags + " " if flags else "") + "read incomplete"
        if needle and not _matches(
            needle,
            (
                label,
                vip_label(key),
                key.protocol.label,
                svc.scheduler,
                flags,
                *(str(d.key) for d in svc.dests),
            ),
        ):
            continue
        r = _rates(svc, settings.instant)
        live = live_dests(svc)
        active = sum(d.active_conns for d in svc.dests)
        inactive = sum(d.inactive_conns for d in svc.dests)
        persist_known = [d.persist_conns for d in svc.dests if d.persist_conns is not None]
        persist = sum(persist_known) if persist_known or not svc.dests else None
        conns = svc.counters.conns if svc.counters else None
        tone, dests_tone = "", ""
        if svc.error:
            tone = BAD
        elif live == 0:
            tone = dests_tone = BAD  # traffic to this VIP has nowhere to go
        elif live < len(svc.dests):
            dests_tone = DRAINED
        cells = (
            key.protocol.label,
            label,
            svc.scheduler,
            flags,
            f"{live}/{len(svc.dests)}" if not svc.error else f"{live}/{len(svc.dests)}?",
            units.count(active, human=human),
            units.count(inactive, human=human),
            units.count(persist, human=human),
            units.count(r.cps if r else None, human=human),
            units.count(r.inpps if r else None, human=human),
            units.count(r.outpps if r else None, human=human),
            units.nbytes(r.inbps if r else None, human=human),
            units.nbytes(r.outbps if r else None, human=human),
            units.count(conns, human=human),
            units.sparkline(history.service(key), TREND_WIDTH, top),
        )
        raw = (
            key.protocol.label,
            _addr_order(key.family, key.address, key.port)
            if not key.is_fwmark
            else (key.family, b"", key.fwmark),
            svc.scheduler,
            flags,
            _degraded(live, len(svc.dests)),
            active,
            inactive,
            -1 if persist is None else persist,
            *((r.cps, r.inpps, r.outpps, r.inbps, r.outbps) if r else (-1.0,) * 5),
            -1 if conns is None else conns,
            0,
        )
        # The trend in the accent colour, as the header's: bars in the text colour read as blocks.
        cell_tones = ("", "", "", "", dests_tone) + ("",) * 9 + (ACCENT,)
        entries.append((raw, Row(service_id(key), cells, tone, cell_tones)))
    empty = "no virtual services on this director" if not snap.services else "no service matches the filter"
    columns = _with_trend_scale(SERVICE_COLUMNS, top, human)
    return _finish(columns, entries, settings.services_sort, len(snap.services), empty)


def _with_trend_scale(columns: tuple[Column, ...], top: float, human: bool) -> tuple[Column, ...]:
    """The Trend column's title says the top of its one scale (conn/s): bars are comparable row to row."""
    title = f"Trend 0-{units.count(top, human=human)}/s" if top > 0 else "Trend"
    return tuple(dataclasses.replace(c, title=title) if c.id == "trend" else c for c in columns)


def _degraded(live: int, dests: int) -> tuple[bool, float, int]:
    """How the Live column sorts, hottest first: no live dest at all, then the largest share and number
    of dests at weight 0 (a 2/3 service before a 9/10 one, both before 3/3)."""
    down = dests - live
    return (dests > 0 and live == 0, down / dests if dests else 0.0, down)


# --- dests of a service -----------------------------------------------------------------------------

DEST_COLUMNS: tuple[Column, ...] = (
    Column("address", "Real server", numeric=False, priority=0),
    Column("fwd", "Fwd", numeric=False, priority=7),
    Column("weight", "Weight", priority=0),
    Column("wshare", "W%", priority=2),
    Column("tshare", "New%", priority=2),  # share of the service's new connections per second
    Column("active", "Active", priority=1),
    Column("inactive", "InAct", priority=4),
    Column("persist", "Persist", priority=6),
    Column("cps", "Conn/s", priority=3),
    Column("inpps", "InPkt/s", priority=9),
    Column("outpps", "OutPkt/s", priority=10),
    Column("inbps", "In B/s", priority=5),
    Column("outbps", "Out B/s", priority=8),
    Column("thresh", "Upper/Lower", priority=11),
    Column("tunnel", "Tunnel", numeric=False, priority=12, shrink=True),
    Column("trend", "Trend", numeric=False, priority=5, sortable=False),
)

DrainMap = Mapping[tuple[ServiceKey, DestKey], int]  # drained dest -> weight it gets back


def dests_table(
    snap: Snapshot | None,
    settings: ViewSettings,
    history: History,
    drains: DrainMap,
    names: Names = no_names,
) -> TableModel:
    svc = snap.service(settings.service) if snap is not None and settings.service is not None else None
    if svc is None:
        return TableModel(DEST_COLUMNS, empty="this service is gone from the director")
    human, needle = settings.human, settings.dests_filter.strip().lower()
    live_weight = svc.live_weight
    rates = {d.key: _rates(d, settings.instant) for d in svc.dests}
    total_cps = sum(r.cps for r in rates.values() if r is not None)
    top = units.trend_top(history.dest(svc.key, d.key) for d in svc.dests)
    entries: list[tuple[Sequence[object], Row]] = []
    for d in svc.dests:
        label = _host(d.family, d.address, d.port, names)
        tunnel = tunnel_label(d)
        if needle and not _matches(needle, (label, str(d.key), d.fwd.label, tunnel)):
            continue
        r = rates[d.key]
        back = drains.get((svc.key, d.key))
        weight = str(d.weight) if d.weight or back is None else f"0 →{back}"
        wshare = d.weight / live_weight if live_weight else 0.0
        # Share of new connections: how the scheduler splits the work now. With none at all there is
        # no share to show (the active ones would make a drained dest look busy).
        new = r.cps if r else 0.0
        tshare = new / total_cps if total_cps > 0 else 0.0
        if d.weight == 0 and new == 0:
            new_share = "no new"  # drained and it shows: say so, not a percentage
        else:
            new_share = units.percent(tshare, 1.0) if total_cps > 0 else "-"
        tone, weight_tone, share_tone = "", "", ""
        if d.weight == 0:
            tone = weight_tone = DRAINED
        elif d.u_threshold and d.active_conns + d.inactive_conns >= d.u_threshold:
            weight_tone = WARN  # over its upper threshold: the scheduler skips it
        if total_cps >= IMBALANCE_MIN_CPS and abs(wshare - tshare) * 100 > IMBALANCE_POINTS:
            share_tone = WARN
        active_tone = BAD if suspect_dead(svc, d) else ""
        thresh = "-" if not (d.u_threshold or d.l_threshold) else f"{d.u_threshold}/{d.l_threshold}"
        cells = (
            label,
            d.fwd.label,
            weight,
            units.percent(d.weight, live_weight),
            new_share,
            units.count(d.active_conns, human=human),
            units.count(d.inactive_conns, human=human),
            units.count(d.persist_conns, human=human),
            units.count(r.cps if r else None, human=human),
            units.count(r.inpps if r else None, human=human),
            units.count(r.outpps if r else None, human=human),
            units.nbytes(r.inbps if r else None, human=human),
            units.nbytes(r.outbps if r else None, human=human),
            thresh,
            tunnel,
            units.sparkline(history.dest(svc.key, d.key), TREND_WIDTH, top),
        )
        raw = (
            _addr_order(d.family, d.address, d.port),
            d.fwd.label,
            d.weight,
            wshare,
            tshare,
            d.active_conns,
            d.inactive_conns,
            -1 if d.persist_conns is None else d.persist_conns,
            *((r.cps, r.inpps, r.outpps, r.inbps, r.outbps) if r else (-1.0,) * 5),
            -1 if d.u_threshold is None else d.u_threshold,
            tunnel,
            0,
        )
        cell_tones = ("", "", weight_tone, share_tone, share_tone, active_tone) + ("",) * 9 + (ACCENT,)
        entries.append((raw, Row(dest_id(d.key), cells, tone, cell_tones)))
    empty = "this service has no real servers" if not svc.dests else "no real server matches the filter"
    columns = _with_trend_scale(DEST_COLUMNS, top, human)
    return _finish(columns, entries, settings.dests_sort, len(svc.dests), empty)


def service_summary(svc: Service, settings: ViewSettings, names: Names = no_names) -> tuple[Span, ...]:
    """The line above the dests table: which service, how it schedules, how much weight is live."""
    live = live_dests(svc)
    spans: list[Span] = [
        (f"{svc.key.protocol.label} {vip_label(svc.key, names)}", ACCENT),
        (f"  {svc.scheduler}", ""),
    ]
    flags = service_flags(svc)
    if flags:
        spans.append((f"  {flags}", DIM))
    tone = BAD if live == 0 else (DRAINED if live < len(svc.dests) else GOOD)
    spans.append((f"  live weight {svc.live_weight} on {live}/{len(svc.dests)} dests", tone))
    if svc.error:
        spans.append((f"  read incomplete: {svc.error}", BAD))
    return tuple(spans)


def suspect_dead(svc: Service, d: Dest) -> bool:
    """Gets new connections, none of them establish, while its siblings' do: the server may be down.

    TCP only: elsewhere "active" does not mean established.
    """
    if svc.key.protocol is not Protocol.TCP or d.weight == 0 or d.active_conns or not d.inactive_conns:
        return False
    new = d.instant.cps if d.instant is not None else (d.rates.cps if d.rates is not None else 0)
    return new > 0 and any(o.active_conns for o in svc.dests if o is not d)


def dest_notes(
    snap: Snapshot, svc: Service, drains: DrainMap, history: History, human: bool = True
) -> list[tuple[Span, ...]]:
    """Under the dests: each drain's progress and what holds its connections; dests that look down."""
    notes: list[tuple[Span, ...]] = []
    sysctls, timeouts, tcp = snap.sysctls, snap.timeouts, svc.key.protocol is Protocol.TCP
    for d in svc.dests:
        if suspect_dead(svc, d):
            notes.append(
                (
                    (f"{d.key}", BAD),
                    ("  gets new connections but none establish", BAD),
                    (
                        f" ({units.count(d.inactive_conns, human=human)} inactive, 0 active):"
                        " the real server may be down",
                        "",
                    ),
                )
            )
        if d.weight != 0:
            continue
        back = drains.get((svc.key, d.key))
        head: list[Span] = [(f"{d.key}", DRAINED)]
        head.append((f" drained, restores to {back}" if back is not None else " weight 0", DRAINED))
        if d.active_conns + d.inactive_conns + (d.persist_conns or 0) == 0:
            head.append(("  no connections left: safe to take down", GOOD))
            notes.append(tuple(head))
            continue
        head.append((f"  {units.count(d.active_conns, human=human)} active", WARN if d.active_conns else ""))
        active = history.draining(svc.key, d.key)
        if len(active) > 1:
            change = active[-1] - active[0]
            trend = (
                "steady"
                if abs(change) <= units.FLAT * max(active)
                else ("falling" if change < 0 else "rising")
            )
            head.append((f" {trend} ", DIM))
            head.append((units.sparkline(active, min(len(active), TREND_WIDTH)), ACCENT))  # as the trends
        head.append((f", {units.count(d.inactive_conns, human=human)} inactive", ""))
        if d.persist_conns:
            head.append((f", {units.count(d.persist_conns, human=human)} templates", ""))
        why: list[str] = []
        templates_hold = d.persist_conns or d.persist_conns is None
        if svc.persistent and templates_hold and not sysctls.get("expire_quiescent_template", 0):
            why.append(
                f"persistence templates keep sending returning clients for up to {svc.timeout}s "
                "(expire_quiescent_template=0)"
            )
        elif d.instant is not None and d.instant.cps > 0:
            why.append("still gets new connections" + (" (port reuse: see conn_reuse_mode)" if tcp else ""))
        if d.active_conns and timeouts is not None and tcp:
            why.append(f"active ones end when clients close, or after {units.duration(timeouts.tcp)} idle")
        if d.inactive_conns and timeouts is not None:
            linger = timeouts.tcpfin if tcp else timeouts.udp
            why.append(f"inactive ones expire within {units.duration(linger)}")
        notes.append(tuple(head))
        notes.extend(((f"    {w}", DIM),) for w in why)
    return notes


@dataclass(frozen=True, slots=True)
class WeightEffect:
    """What a weight edit would do to its service, for the confirmation dialog."""

    old: int
    new: int
    live_before: int
    live_after: int
    live_dests_after: int
    dests: int

    @property
    def takes_last_weight(self) -> bool:
        return self.live_before > 0 and self.live_after == 0


def weight_effect(svc: Service, dkey: DestKey, new: int) -> WeightEffect:
    d = svc.dest(dkey)
    old = d.weight if d is not None else 0
    after = [new if x.key == dkey else x.weight for x in svc.dests]
    return WeightEffect(old, new, svc.live_weight, sum(after), sum(1 for w in after if w > 0), len(svc.dests))


# --- events -----------------------------------------------------------------------------------------

EVENT_COLUMNS: tuple[Column, ...] = (
    Column("time", "Time", numeric=False, priority=0),
    Column("kind", "Event", numeric=False, priority=1),
    Column("what", "Where", numeric=False, priority=3, shrink=True),
    Column("change", "Change", numeric=False, priority=2),
    Column("by", "By", numeric=False, priority=2),
    Column("message", "Details", numeric=False, priority=5, shrink=True),
)

_EVENT_TONES = {
    "poll_failed": BAD,
    "inconsistent_read": WARN,
    "service_removed": WARN,
    "dest_removed": WARN,
    "counters_reset": WARN,
    "poll_recovered": GOOD,
    "drain_finished": GOOD,
}


_SELF_EXPLAINED = ("weight_changed", "dest_added", "dest_removed", "service_added", "service_removed")


def _event_cells(ev: Event) -> tuple[tuple[str, ...], str]:
    # The dest first: it is what changed, and what must survive a narrow terminal's cut.
    if ev.dest is not None:
        what = f"{ev.dest} in {ev.service}"
    else:
        what = str(ev.service) if ev.service is not None else ev.message
    change = f"{ev.old} → {ev.new}" if ev.old is not None or ev.new is not None else ""
    tone = _EVENT_TONES.get(ev.kind, "")
    by = ""
    kind = ev.kind.replace("_", " ")
    details = "" if ev.kind in _SELF_EXPLAINED or ev.service is None else ev.message
    if ev.kind == "weight_changed":
        by = ev.actor or "outside lvstop"
        if ev.action:  # lvstop's own edit: what was asked for, and why if a reason was given
            kind = ev.action.replace("_", " ")
            details = f"reason: {ev.reason}" if ev.reason else ""
        if ev.actor is None:
            tone = WARN  # keepalived or a human with ipvsadm: they may put their weight back
            details = "not through lvstop: keepalived, ldirectord or ipvsadm may set it back"
    cells = (
        time.strftime("%H:%M:%S", time.localtime(ev.time)),
        kind,
        what,
        change,
        by,
        details,
    )
    return cells, tone


def events_table(events: Sequence[Event], settings: ViewSettings) -> TableModel:
    needle = settings.events_filter.strip().lower()
    entries: list[tuple[Sequence[object], Row]] = []
    seen: dict[str, int] = {}
    for ev in events:
        cells, tone = _event_cells(ev)
        if needle and not _matches(needle, (*cells, ev.message)):
            continue
        # Keys stay stable as older events fall out of the log, so the cursor stays put.
        key = f"{ev.time!r}|{ev.kind}|{ev.message}"
        n = seen[key] = seen.get(key, 0) + 1
        if n > 1:
            key += f"#{n}"
        entries.append(((ev.time, *cells[1:]), Row(key, cells, tone)))
    return _finish(EVENT_COLUMNS, entries, settings.events_sort, len(events), "no events yet")


def recent_events(events: Sequence[Event], n: int = 5) -> list[tuple[Span, ...]]:
    """The newest events, newest first, for the strip under the services."""
    lines: list[tuple[Span, ...]] = []
    for ev in reversed(events[-n:]):
        cells, tone = _event_cells(ev)
        t, kind, what, change, by, details = cells
        spans: list[Span] = [(t, DIM), (f"  {kind}", tone), (f"  {what}", "")]
        if change:
            spans.append((f"  {change}", tone))
        if by:
            spans.append((f"  {by}", DIM))
        if details:
            spans.append((f"  {details}", DIM))
        lines.append(tuple(spans))
    return lines


# --- director ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting:
    section: str
    name: str
    value: str
    meaning: str
    tone: str = ""


def director_settings(snap: Snapshot | None) -> list[Setting]:
    if snap is None:
        return []
    out: list[Setting] = []
    if snap.daemons:
        for dm in snap.daemons:
            extra = ", ".join(
                f"{k} {v}"
                for k, v in (
                    ("maxlen", dm.maxlen),
                    ("group", dm.group or dm.group6),
                    ("port", dm.port),
                    ("ttl", dm.ttl),
                )
                if v
            )
            out.append(
                Setting(
                    "Sync daemons",
                    dm.state.name.lower(),
                    f"{dm.mcast_ifn} syncid {dm.syncid}",
                    (
                        "sends connection state to the backup"
                        if dm.state.name == "MASTER"
                        else "receives connection state from the master"
                    )
                    + (f" ({extra})" if extra else ""),
                    GOOD,
                )
            )
    else:
        out.append(
            Setting(
                "Sync daemons",
                "none",
                "-",
                "no connection sync: a failover drops every established connection",
                WARN,
            )
        )
    if snap.timeouts is not None:
        for name in ("tcp", "tcpfin", "udp"):
            seconds = getattr(snap.timeouts, name)
            out.append(
                Setting("Timeouts", name, f"{seconds}s ({units.duration(seconds)})", explain.TIMEOUTS[name])
            )
    names = [n for n in EXPLAINING_SYSCTLS if n in snap.sysctls]
    names += sorted(n for n in snap.sysctls if n not in EXPLAINING_SYSCTLS)
    for n in names:
        meaning = explain.sysctl(n, snap.sysctls[n])
        if n == "run_estimation" and snap.est_cpulist == "":
            meaning = explain.est_cpulist("")  # the switch says on, but no kthread runs
        out.append(Setting("Sysctls (net.ipv4.vs)", n, str(snap.sysctls[n]), meaning))
    if snap.est_cpulist is not None:
        shown, tone = (snap.est_cpulist, "") if snap.est_cpulist else ("(empty)", WARN)
        out.append(
            Setting(
                "Sysctls (net.ipv4.vs)", "est_cpulist", shown, explain.est_cpulist(snap.est_cpulist), tone
            )
        )
    if snap.version or snap.conn_tab_size:
        out.append(
            Setting(
                "IPVS",
                "version",
                snap.version or "-",
                f"connection hash table of {snap.conn_tab_size} buckets" if snap.conn_tab_size else "",
            )
        )
    return out


# --- header -----------------------------------------------------------------------------------------


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


def header_lines(snap: Snapshot | None, history: History, settings: ViewSettings) -> list[tuple[Chunk, ...]]:
    """Who (the status chunks follow it); director totals with sparklines; counts, sync, timeouts.

    Built off the UI thread: the counts walk every dest.
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
        services = len(snap.services)
        dests = sum(len(s.dests) for s in snap.services)
        drained = sum(1 for s in snap.services for d in s.dests if d.weight == 0)
        dead = sum(1 for s in snap.services if not any(d.weight > 0 for d in s.dests))
        third.append(Chunk(((f"{services} services, {dests} dests", ""),)))
        if drained:
            third.append(Chunk(((f", {drained} at weight 0", DRAINED),), drop=1))
        if dead:
            third.append(Chunk(((f", {dead} with no live dest", BAD),)))
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


def filter_line(text: str, counts: tuple[int, int] | None, noun: str) -> tuple[Span, ...]:
    """The line that says a kept filter hides rows: what it is, how many rows pass, how to undo it."""
    spans: list[Span] = [(" filter ", DIM), (text, ACCENT)]
    if counts is not None:
        spans.append((f"  {counts[0]} of {counts[1]} {noun}", WARN if counts[0] < counts[1] else ""))
    spans.append(("  / edits, esc clears", DIM))
    return tuple(spans)


def fit_chunks(chunks: Sequence[Chunk], width: int) -> list[Chunk]:
    """Drop the most droppable chunks until the line fits; keep the order of the rest."""
    kept = list(chunks)
    while kept and sum(c.width for c in kept) > width:
        worst = max(range(len(kept)), key=lambda i: (kept[i].drop, i))
        if kept[worst].drop == 0 and len(kept) == 1:
            break
        del kept[worst]
    return kept


MIN_SHRUNK = 12  # a shrinkable column cut to fewer characters than this is not worth showing


def visible_columns(model: TableModel, width: int, gap: int = 2) -> list[tuple[int, int]]:
    """(index, width) of the columns that fit in `width`, dropping the least important first.

    The column the table is sorted by comes right after the first (key) column: the user chose it.
    A shrinkable column that does not fit whole takes what room is left, if that is enough.
    """
    cols = model.columns
    widths = model.widths or tuple(len(c.title) for c in cols)
    sort = model.sort.column if model.sort is not None else None
    first = min(range(len(cols)), key=lambda i: (cols[i].priority, i), default=0)

    def rank(i: int) -> tuple[int, int, int]:
        if i == first:
            return (0, 0, 0)
        return (1, 0, 0) if cols[i].id == sort else (2, cols[i].priority, i)

    order = sorted(range(len(cols)), key=rank)
    chosen: dict[int, int] = {}
    used = 0
    for i in order:
        sep = gap if chosen else 0
        if not chosen or used + sep + widths[i] <= width:
            chosen[i] = widths[i]
        elif cols[i].shrink and width - used - sep >= MIN_SHRUNK:
            chosen[i] = width - used - sep  # what is left; lower-priority columns get nothing after this
        else:
            continue
        used += sep + chosen[i]
    return sorted(chosen.items())


# --- connections ------------------------------------------------------------------------------------

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
    state_model = _finish(CONN_STATE_COLUMNS, states, SortSpec("entries", True), len(states), "no entries")

    dest_rows: list[tuple[Sequence[object], Row]] = []
    dest_keys: dict[str, tuple[ServiceKey, DestKey]] = {}
    for (skey, dkey), c in summary.by_dest.items():
        rid = f"{skey} {dkey}"
        dest_keys[rid] = (skey, dkey)
        dest_cells = (
            _host(dkey.family, dkey.address, dkey.port, names),
            units.count(c.active, human=human),
            units.count(c.inactive, human=human),
            units.count(c.templates, human=human),
            str(skey),
        )
        order = _addr_order(dkey.family, dkey.address, dkey.port)
        dest_rows.append(((order, c.active, c.inactive, c.templates, str(skey)), Row(rid, dest_cells)))
    dest_model = _finish(CONN_DEST_COLUMNS, dest_rows, SortSpec("active", True), len(dest_rows), "no entries")

    client_rows: list[tuple[Sequence[object], Row]] = [
        ((addr, n), Row(addr, (names(addr) or addr, units.count(n, human=human))))
        for addr, n in summary.top_clients
    ]
    client_model = _finish(
        CONN_CLIENT_COLUMNS, client_rows, SortSpec("entries", True), len(client_rows), "no clients"
    )

    entry_rows: list[tuple[Sequence[object], Row]] = []
    for i, e in enumerate(summary.entries):
        fam = 10 if ":" in e.client else 2
        dfam = 10 if ":" in e.daddr else 2
        vfam = 10 if ":" in e.vaddr else 2
        entry_cells = (
            e.protocol,
            _host(fam, e.client, e.client_port, names) if e.client_port else f"{e.client} (template)",
            e.state,
            units.duration(e.expires),
            _host(dfam, e.daddr, e.dport, names),
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
    entry_model = _finish(
        CONN_ENTRY_COLUMNS,
        entry_rows,
        SortSpec("proto", False),
        summary.matched,
        "no connection matches" + more,
    )
    return ConnViews(
        tuple(line), state_model, dest_model, client_model, entry_model, MappingProxyType(dest_keys)
    )


# --- several directors side by side -----------------------------------------------------------------

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
    conns = {
        s.key: (sum(d.active_conns for d in s.dests), sum(d.inactive_conns for d in s.dests))
        for s in snap.services
    }
    role = ", ".join(f"{d.state.name.lower()} {d.mcast_ifn}/{d.syncid}" for d in snap.daemons or ()) or (
        "no sync" if snap.daemons is not None else "sync unknown"
    )
    busiest = sorted(conns, key=lambda k: (-(conns[k][0] + conns[k][1]), k))[:SIDE_SERVICES]
    return Brief(
        snap.director,
        role,
        len(snap.services),
        sum(len(s.dests) for s in snap.services),
        sum(1 for s in snap.services for d in s.dests if d.weight == 0),
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
    return _finish(tuple(cols), rows, None, len(rows), "waiting for the directors")


def _poll_word(h: PollHealth) -> str:
    if h.last_error:
        return "FAILING"
    if h.stale:
        return f"stale {units.duration(h.age)}"
    return f"ok {units.duration(h.age)} ago" if h.age is not None else "waiting"
