"""Health checks as the tables show them: a dest's state, since when, its last answer; healthy/total per
service; the header's count; the notes on dests that are down but still weighted.

`health` is None when no checks run (no --health.config): then nothing here shows. A dest the checks
do not match is "unchecked"; with weight it stands out, as does a dest that is down but still weighted.
Each says so in words (DOWN, unchecked), not by colour alone.
"""

from __future__ import annotations

from collections.abc import Mapping

from lvstop.health.state import DestHealth, State
from lvstop.model import Dest, DestKey, Service, ServiceKey, Snapshot
from lvstop.tui import units
from lvstop.tui.viewmodel.table import Column
from lvstop.tui.viewmodel.tones import BAD, DIM, DRAINED, GOOD, WARN, Span

HealthMap = Mapping[tuple[ServiceKey, DestKey], DestHealth]

# Word columns (left-aligned) whose raw values sort worst first in the ascending order they start in.
SERVICE_HEALTH_COLUMN = Column("health", "Health", numeric=False, priority=2)
DEST_HEALTH_COLUMN = Column("health", "Health", numeric=False, priority=1)
DEST_CHECK_COLUMN = Column("check", "Last check", numeric=False, priority=6, shrink=True)


def dest_health(h: DestHealth | None, d: Dest, now: float) -> tuple[str, str, int]:
    """The Health cell of a dest: text, tone, and its rank (0 the worst)."""
    if h is None:
        return ("unchecked", WARN, 1) if d.weight > 0 else ("-", DIM, 4)
    age = "" if h.since is None else " " + units.duration(now - h.since)
    if h.state is State.DOWN:
        return (f"DOWN{age}", BAD, 0) if d.weight > 0 else (f"down{age}", DRAINED, 2)
    if h.state is State.UP:
        return f"up{age}", GOOD, 5
    return "unknown", DIM, 3


def last_check(h: DestHealth | None) -> tuple[str, str, float]:
    """The Last check cell: the answer of the check that decides the state, after its latency when it
    answered well (a failure's time is its timeout, or says nothing); BAD when a check's latest probe
    failed, a dest still up (fewer than `fall` failures yet) included. Sorts by latency."""
    if h is None:
        return "", "", -1.0
    failing = any(c.last is not None and not c.last.ok for c in h.checks)
    latency = h.latency
    if latency is None:
        return h.reason, BAD if failing else "", -1.0
    if failing:
        return h.reason, BAD, latency
    return f"{units.latency(latency)} {h.reason}", "", latency


States = Mapping[tuple[ServiceKey, DestKey], State]


def health_states(health: HealthMap) -> States:
    """The state of every checked dest, for counts over all of them: from the runner's view without
    making each dest's row (HealthView.states), else from the rows."""
    states = getattr(health, "states", None)
    return dict(states()) if states is not None else {k: h.state for k, h in health.items()}


def service_health(svc: Service, states: States) -> tuple[str, str, tuple[int, int, int]]:
    """healthy/total of a service, DOWN when a dest with weight is down, unchecked when one has no check."""
    up = checked = weighted_down = weighted_unchecked = 0
    for d in svc.dests:
        state = states.get((svc.key, d.key))
        if state is None:
            weighted_unchecked += d.weight > 0
            continue
        checked += 1
        up += state is State.UP
        weighted_down += state is State.DOWN and d.weight > 0
    total = len(svc.dests)
    raw = (-weighted_down, -weighted_unchecked, up - total)
    if not checked:
        return ("unchecked", WARN, raw) if weighted_unchecked else ("-", DIM, raw)
    text = f"{up}/{total}"
    if weighted_down:
        return f"{text} DOWN", BAD, raw
    if weighted_unchecked:
        return f"{text} unchecked", WARN, raw
    return text, GOOD if up == total else DRAINED, raw


def health_counts(snap: Snapshot, states: States) -> tuple[tuple[Span, ...], tuple[Span, ...]]:
    """The header's health counts (up, down, unknown, unchecked), and apart, so that it is never cut
    from a narrow header, how many dests are down with weight."""
    up = down = weighted_down = unknown = unchecked = 0
    for svc in snap.services:
        for d in svc.dests:
            state = states.get((svc.key, d.key))
            if state is None:
                unchecked += d.weight > 0
            elif state is State.UP:
                up += 1
            elif state is State.DOWN:
                down += 1
                weighted_down += d.weight > 0
            else:
                unknown += 1
    counts: list[Span] = [("  health ", DIM), (f"{up} up", GOOD)]
    if down:
        counts.append((f", {down} down", DRAINED))
    if unknown:
        counts.append((f", {unknown} unknown", DIM))
    if unchecked:
        counts.append((f", {unchecked} unchecked", WARN))
    alarm: tuple[Span, ...] = ((f"  {weighted_down} DOWN with weight", BAD),) if weighted_down else ()
    return tuple(counts), alarm


def health_notes(svc: Service, health: HealthMap, now: float) -> list[tuple[Span, ...]]:
    """Above the dests: each dest that is down but keeps its weight (new connections still go to it),
    and how many weighted dests no check covers."""
    notes: list[tuple[Span, ...]] = []
    unchecked = 0
    for d in svc.dests:
        h = health.get((svc.key, d.key))
        if h is None:
            unchecked += d.weight > 0
            continue
        if h.state is not State.DOWN or d.weight == 0:
            continue
        age = f" for {units.duration(now - h.since)}" if h.since is not None else ""
        notes.append(
            (
                (f"{d.key}", BAD),
                (f"  DOWN{age} with weight {d.weight}", BAD),
                (f": new connections still go to it ({h.reason})", ""),
            )
        )
    if unchecked:
        many = "s have" if unchecked > 1 else " has"
        notes.append(((f"{unchecked} real server{many} weight and no health check", WARN),))
    return notes
