"""The dests view: the real servers of one service, the line above them and the notes under them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from lvstop.managers import Claim
from lvstop.model import Dest, DestKey, Protocol, Service, ServiceKey, Snapshot
from lvstop.tui import units
from lvstop.tui.viewmodel.health import (
    DEST_CHECK_COLUMN,
    DEST_HEALTH_COLUMN,
    HealthMap,
    dest_health,
    health_notes,
    last_check,
)
from lvstop.tui.viewmodel.history import TREND_WIDTH, History, with_trend_scale
from lvstop.tui.viewmodel.labels import (
    Names,
    addr_order,
    dest_id,
    host_label,
    live_dests,
    no_names,
    rates_of,
    service_flags,
    tunnel_label,
    vip_label,
)
from lvstop.tui.viewmodel.managers import managed_notes
from lvstop.tui.viewmodel.settings import ViewSettings
from lvstop.tui.viewmodel.table import Column, Row, TableModel, finish_table, matches
from lvstop.tui.viewmodel.tones import ACCENT, BAD, DIM, DRAINED, GOOD, WARN, Span

if TYPE_CHECKING:
    from lvstop.control import DrainRecord

IMBALANCE_POINTS = 15.0  # weight share vs traffic share gap (percentage points) worth a warning
IMBALANCE_MIN_CPS = 5.0  # below this many conns/s the shares are noise

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
_HEALTH_AT = 3  # Health and Last check go right after Weight

DrainMap = Mapping[tuple[ServiceKey, DestKey], "DrainRecord"]  # drained dest -> its weight back, who, why


def dests_table(
    snap: Snapshot | None,
    settings: ViewSettings,
    history: History,
    drains: DrainMap,
    names: Names = no_names,
    health: HealthMap | None = None,
) -> TableModel:
    """The dests of the drilled-down service; with `health` (checks configured) Health and Last check
    columns after Weight, ages counted to the snapshot's time."""
    svc = snap.service(settings.service) if snap is not None and settings.service is not None else None
    if snap is None or svc is None:
        return TableModel(DEST_COLUMNS, empty="this service is gone from the director")
    human, needle = settings.human, settings.dests_filter.strip().lower()
    live_weight = svc.live_weight
    rates = {d.key: rates_of(d, settings.instant) for d in svc.dests}
    total_cps = sum(r.cps for r in rates.values() if r is not None)
    top = units.trend_top(history.dest(svc.key, d.key) for d in svc.dests)
    entries: list[tuple[Sequence[object], Row]] = []
    for d in svc.dests:
        label = host_label(d.family, d.address, d.port, names)
        tunnel = tunnel_label(d)
        h = health.get((svc.key, d.key)) if health is not None else None
        state = dest_health(h, d, snap.wall_time) if health is not None else None
        said = state[0] if state else ""
        if needle and not matches(needle, (label, str(d.key), d.fwd.label, tunnel, said)):
            continue
        r = rates[d.key]
        rec = drains.get((svc.key, d.key))
        weight = str(d.weight) if d.weight or rec is None else f"0 →{rec.previous}"
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
        cells: tuple[str, ...] = (
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
        raw: tuple[object, ...] = (
            addr_order(d.family, d.address, d.port),
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
        cell_tones: tuple[str, ...] = (
            ("", "", weight_tone, share_tone, share_tone, active_tone) + ("",) * 9 + (ACCENT,)
        )
        if state is not None:
            at, (check, check_tone, latency) = _HEALTH_AT, last_check(h)
            cells = (*cells[:at], state[0], check, *cells[at:])
            raw = (*raw[:at], state[2], latency, *raw[at:])
            cell_tones = (*cell_tones[:at], state[1], check_tone, *cell_tones[at:])
        entries.append((raw, Row(dest_id(d.key), cells, tone, cell_tones)))
    empty = "this service has no real servers" if not svc.dests else "no real server matches the filter"
    columns = DEST_COLUMNS
    if health is not None:
        columns = (*columns[:_HEALTH_AT], DEST_HEALTH_COLUMN, DEST_CHECK_COLUMN, *columns[_HEALTH_AT:])
    columns = with_trend_scale(columns, top, human)
    return finish_table(columns, entries, settings.dests_sort, len(svc.dests), empty)


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


def drained_by(rec: DrainRecord | None) -> tuple[Span, ...]:
    """Who drained a dest and why: health restores its own drains when the dest is up again, never an
    operator's, so the on-call must tell them apart (lvstop/health/act.py)."""
    if rec is None:
        return ((" weight 0", DRAINED),)
    if rec.cause == "health":
        why = rec.reason.removeprefix("health: ") if rec.reason else "down"
        return (
            (" drained by health", BAD),
            (f": {why}, restores to {rec.previous} when up", DRAINED),
        )
    by = f"{rec.actor} ({rec.reason})" if rec.reason else rec.actor
    return ((f" drained by {by}, restores to {rec.previous}", DRAINED),)


def suspect_dead(svc: Service, d: Dest) -> bool:
    """Gets new connections, none of them establish, while its siblings' do: the server may be down.

    TCP only: elsewhere "active" does not mean established.
    """
    if svc.key.protocol is not Protocol.TCP or d.weight == 0 or d.active_conns or not d.inactive_conns:
        return False
    new = d.instant.cps if d.instant is not None else (d.rates.cps if d.rates is not None else 0)
    return new > 0 and any(o.active_conns for o in svc.dests if o is not d)


def dest_notes(
    snap: Snapshot,
    svc: Service,
    drains: DrainMap,
    history: History,
    human: bool = True,
    health: HealthMap | None = None,
    managed: tuple[Claim, ...] = (),
    unread: tuple[str, ...] = (),
) -> list[tuple[Span, ...]]:
    """Next to the dests: who manages the service (keepalived, ldirectord), dests down with weight
    (health checks), each drain's progress and what holds its connections; dests that look down."""
    notes = managed_notes(managed, unread)
    if health is not None:
        notes += health_notes(svc, health, snap.wall_time)
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
        rec = drains.get((svc.key, d.key))
        head: list[Span] = [(f"{d.key}", DRAINED), *drained_by(rec)]
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
