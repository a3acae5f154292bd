"""Hysteresis and what readers see: pure, no I/O, no clock of its own (times come in as arguments).

A checked dest starts `unknown`. As HAProxy treats a server it has just started to check, one success
makes it `up` and `fall` failures in a row make it `down`; after that it goes down after `fall`
failures in a row and back up after `rise` successes in a row. A dest with several checks is down
when any of them is down, up when all are up, unknown otherwise.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lvstop.codec import JsonReader
from lvstop.model import DestKey, ServiceKey


class State(enum.StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe of one dest. `weight` is what an exec check's exit code 2-255 asks for (code - 2);
    `percent` what an agent asks for ("drain" is 0 %)."""

    ok: bool
    latency: float  # seconds from the start of the probe to its answer (or to giving up)
    reason: str  # short, one line: "connected", "status 503", "timed out after 2 s", ...
    weight: int | None = None
    percent: int | None = None


@dataclass(frozen=True, slots=True)
class CheckHealth:
    """One check of one dest after its latest result."""

    check: str
    state: State
    since: float | None  # wall time of the latest state change (None while unknown)
    last: ProbeResult | None
    last_time: float | None  # wall time of `last`
    successes: int = 0  # in a row
    failures: int = 0  # in a row


@dataclass(frozen=True, slots=True)
class Transition:
    service: ServiceKey
    dest: DestKey
    check: str
    old: State
    new: State
    reason: str
    time: float


def initial(check: str) -> CheckHealth:
    return CheckHealth(check, State.UNKNOWN, None, None, None)


def advance(h: CheckHealth, result: ProbeResult, now: float, fall: int, rise: int) -> CheckHealth:
    """`h` after one more result, at wall time `now`."""
    successes = h.successes + 1 if result.ok else 0
    failures = 0 if result.ok else h.failures + 1
    state = h.state
    if result.ok and (state is State.UNKNOWN or (state is State.DOWN and successes >= rise)):
        state = State.UP
    elif not result.ok and state is not State.DOWN and failures >= fall:
        state = State.DOWN
    since = now if state is not h.state else h.since
    return CheckHealth(h.check, state, since, result, now, successes, failures)


@dataclass(frozen=True, slots=True)
class DestHealth:
    """A dest's health over all its checks, as the TUI, `lvstop list --json` and the exporter show it."""

    state: State
    since: float | None
    checks: tuple[CheckHealth, ...]

    @property
    def latency(self) -> float | None:
        """The slowest latest answer among the checks (None before any)."""
        values = [c.last.latency for c in self.checks if c.last is not None]
        return max(values) if values else None

    @property
    def reason(self) -> str:
        """The latest result of the check that decides the state (a failing one first)."""
        for c in sorted(self.checks, key=lambda c: c.state is not self.state):
            if c.last is not None:
                return c.last.reason
        return "not checked yet"


def combine(checks: Iterable[CheckHealth]) -> DestHealth:
    items = tuple(checks)
    states = {c.state for c in items}
    if State.DOWN in states:
        state = State.DOWN
    elif states == {State.UP}:
        state = State.UP
    else:
        state = State.UNKNOWN
    # down since the first check went down; up since the last one came up
    times = [c.since for c in items if c.state is state and c.since is not None]
    since = None if not times or state is State.UNKNOWN else (min if state is State.DOWN else max)(times)
    return DestHealth(state, since, items)


HealthMap = Mapping[tuple[ServiceKey, DestKey], DestHealth]


def health_to_dict(h: DestHealth) -> dict[str, Any]:
    """A dest's `health` object in lvstop's JSON (`lvstop list --json`)."""
    return {
        "state": h.state.value,
        "since": h.since,
        "latency": h.latency,
        "reason": h.reason,
        "checks": [
            {
                "check": c.check,
                "state": c.state.value,
                "since": c.since,
                "time": c.last_time,
                "ok": None if c.last is None else c.last.ok,
                "latency": None if c.last is None else c.last.latency,
                "reason": None if c.last is None else c.last.reason,
                "weight": None if c.last is None else c.last.weight,
                "percent": None if c.last is None else c.last.percent,
            }
            for c in h.checks
        ],
    }


def health_from_dict(doc: object, path: str = "health") -> DestHealth:
    """health_to_dict's form back (a remote exporter's /api/v1/health); ParseError naming the path of
    the first wrong value. The counts of successes and failures in a row are not sent: 0."""
    r = JsonReader(doc, path)
    return DestHealth(r.enum("state", State), r.opt_number("since"), r.items("checks", _read_check))


def _read_check(c: JsonReader) -> CheckHealth:
    last = None
    if c.d.get("ok") is not None:
        last = ProbeResult(
            c.boolean("ok"),
            c.number("latency"),
            c.text("reason"),
            c.opt_integer("weight"),
            c.opt_integer("percent"),
        )
    return CheckHealth(
        c.text("check"), c.enum("state", State), c.opt_number("since"), last, c.opt_number("time")
    )
