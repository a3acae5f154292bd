"""The events view and the strip of recent events under the services."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lvstop.tui.viewmodel.settings import ViewSettings
from lvstop.tui.viewmodel.table import Column, Row, TableModel, finish_table, matches
from lvstop.tui.viewmodel.tones import BAD, DIM, GOOD, WARN, Span

if TYPE_CHECKING:
    from lvstop.events import Event


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
    "health_down": BAD,
    "health_up": GOOD,
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
    if ev.states is not None:  # health: the states, and the answer that moved them
        change, details = " → ".join(ev.states), ev.reason or ""
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
        if needle and not matches(needle, (*cells, ev.message)):
            continue
        # Keys stay stable as older events fall out of the log, so the cursor stays put.
        key = f"{ev.time!r}|{ev.kind}|{ev.message}"
        n = seen[key] = seen.get(key, 0) + 1
        if n > 1:
            key += f"#{n}"
        entries.append(((ev.time, *cells[1:]), Row(key, cells, tone)))
    return finish_table(EVENT_COLUMNS, entries, settings.events_sort, len(events), "no events yet")


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
