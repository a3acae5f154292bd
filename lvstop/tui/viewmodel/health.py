"""Health checks as the tables show them: a dest's state, since when, its last answer; healthy/total per
service; the header's count; the notes on dests that are down but still weighted.

`health` is None when no checks run (no --health.config): then nothing here shows. A dest the checks
do not match is "unchecked"; with weight it stands out, as does a dest that is down but still weighted.
Each says so in words (DOWN, unchecked), not by colour alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from lvstop.health.state import DestHealth, State
from lvstop.model import Array, Dest, DestKey, Service, ServiceKey, Table, dest_key_bytes
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


NO_CHECK, UNKNOWN, UP, DOWN = -1, 0, 1, 2  # a dest row's health code (row_states)
_CODES = {State.UNKNOWN: UNKNOWN, State.UP: UP, State.DOWN: DOWN}


def row_states(health: HealthMap, table: Table) -> Array:
    """Each dest row's health code, matched on the dests' key column: no dest row is made for counts
    (the runner's view gives its states by those keys, HealthView.keyed_states; other maps are keyed
    here)."""
    keyed = getattr(health, "keyed_states", None)
    if keyed is not None:
        states = keyed()
    else:
        states = {dest_key_bytes(s, d.family, d.address, d.port): h.state for (s, d), h in health.items()}
    codes = {k: _CODES[v] for k, v in states.items()}
    keys = table.dest_keys().tolist()
    return np.fromiter((codes.get(k, NO_CHECK) for k in keys), np.int8, len(keys))


@dataclass(frozen=True, slots=True)
class ServiceCounts:
    """Per service (by index): dests up, checked, down with weight, with weight and no check, all."""

    up: list[int]
    checked: list[int]
    weighted_down: list[int]
    weighted_unchecked: list[int]
    total: list[int]


def service_counts(table: Table, codes: Array) -> ServiceCounts:
    n, svc, weighted = len(table.services), table.dests.service, table.dests.weight > 0

    def per(mask: Array) -> list[int]:
        return np.bincount(svc[mask], minlength=n).tolist()  # type: ignore[no-any-return]

    return ServiceCounts(
        per(codes == UP),
        per(codes != NO_CHECK),
        per((codes == DOWN) & weighted),
        per((codes == NO_CHECK) & weighted),
        np.diff(table.starts).tolist(),
    )


def service_health(counts: ServiceCounts, i: int) -> tuple[str, str, tuple[int, int, int]]:
    """healthy/total of service i, DOWN when a dest with weight is down, unchecked when one has no check."""
    up, checked, weighted_down = counts.up[i], counts.checked[i], counts.weighted_down[i]
    weighted_unchecked, total = counts.weighted_unchecked[i], counts.total[i]
    raw = (-weighted_down, -weighted_unchecked, up - total)
    if not checked:
        return ("unchecked", WARN, raw) if weighted_unchecked else ("-", DIM, raw)
    text = f"{up}/{total}"
    if weighted_down:
        return f"{text} DOWN", BAD, raw
    if weighted_unchecked:
        return f"{text} unchecked", WARN, raw
    return text, GOOD if up == total else DRAINED, raw


def health_counts(table: Table, codes: Array) -> tuple[tuple[Span, ...], tuple[Span, ...]]:
    """The header's health counts (up, down, unknown, unchecked), and apart, so that it is never cut
    from a narrow header, how many dests are down with weight."""
    weighted = table.dests.weight > 0
    up, down, unknown = (int((codes == c).sum()) for c in (UP, DOWN, UNKNOWN))
    weighted_down = int(((codes == DOWN) & weighted).sum())
    unchecked = int(((codes == NO_CHECK) & weighted).sum())
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
