"""Acting on health (`--health.act`, `act: true`): what to drain, restore, raise and lower. Pure, no I/O.

Each round (after a poll, or a state change) gets the acting health of each dest (its checks that act,
combined as state.combine does), the snapshot's weights, the drain records, the configured sorry
servers, the services keepalived or ldirectord manage and the ramps health runs, and returns the
actions to take, in order: restores first (they add live weight), then drains, a sorry server raised
(to weight 1, or the floor) just before the drain that would take the last live weight, and lowered
once the service has live weight without it. lvstop/health/actor.py carries them out through
Control, whose guards have the last word.

A dest's acting state is acted on once: `Memory` remembers which (state, since) each dest had and
whether it was dealt with, so an operator who restores a dest health drained keeps it restored until
the dest goes down again, and a refusal is said once, not every round. Reasons stay apart (as
ipvs-weightman's do): health restores only drains whose cause is health; a dest an operator drained
stays drained when it turns healthy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lvstop.control import DrainRecord
from lvstop.health.config import DestMatch, HealthConfig
from lvstop.health.state import CheckHealth, DestHealth, State, combine
from lvstop.model import DestKey, Service, ServiceKey, Snapshot

Key = tuple[ServiceKey, DestKey]

DRAIN = "drain"
RESTORE = "restore"
RAISE_SORRY = "raise_sorry"
LOWER_SORRY = "lower_sorry"
REFUSE = "refuse"  # a drain not made: it would take the service's last live weight
KEEP = "keep"  # a healthy dest left drained: someone else drained it
SKIP = "skip"  # a service keepalived or ldirectord manages


@dataclass(frozen=True, slots=True)
class Acting:
    """A dest's health over the checks that act on it, and the slow start they ask for (the longest)."""

    health: DestHealth
    slow_start: float = 0.0


@dataclass(frozen=True, slots=True)
class Action:
    kind: str
    service: ServiceKey
    dest: DestKey | None  # None: the whole service (skip)
    reason: str
    weight: int | None = (
        None  # restore and raise_sorry: the weight; drain: the one to remember, if not the current
    )
    slow_start: float = 0.0  # restore: ramp over this many seconds


@dataclass
class Memory:
    """What carries from one round to the next."""

    seen: dict[Key, tuple[State, float | None]] = field(default_factory=dict)  # acting state, since
    done: set[Key] = field(default_factory=set)  # dests whose current acting state needs nothing more
    told: dict[object, str] = field(default_factory=dict)  # a dest's or service's last refusal or skip

    def tell(self, about: object, message: str) -> bool:
        """True the first time `message` is said about `about` (since its state changed)."""
        if self.told.get(about) == message:
            return False
        self.told[about] = message
        return True

    def failed(self, key: Key) -> None:
        """A drain or restore of `key` did not happen: try again next round."""
        self.done.discard(key)

    def forget(self, key: Key) -> None:
        self.seen.pop(key, None)
        self.done.discard(key)
        self.told.pop(key, None)


def acting(
    items: Iterable[tuple[tuple[int, ServiceKey, DestKey], CheckHealth]], config: HealthConfig, flag: bool
) -> dict[Key, Acting]:
    """Per dest, its acting checks combined; dests no acting check covers are left out.
    `items`: the runner's (check index, service, dest) -> CheckHealth; `flag`: --health.act."""
    grouped: dict[Key, list[CheckHealth]] = {}
    slow: dict[Key, float] = {}
    for (i, skey, dkey), h in items:
        spec = config.checks[i]
        if spec.acts(flag):
            grouped.setdefault((skey, dkey), []).append(h)
            slow[(skey, dkey)] = max(slow.get((skey, dkey), 0.0), spec.slow_start)
    return {k: Acting(combine(v), slow[k]) for k, v in grouped.items()}


def sorry_servers(config: HealthConfig, flag: bool) -> dict[ServiceKey, DestMatch]:
    """Per service, the sorry server of its acting checks."""
    return {c.service: c.sorry_server for c in config.checks if c.service and c.sorry_server and c.acts(flag)}


def services(health: Mapping[Key, Acting], sorry: Mapping[ServiceKey, DestMatch]) -> list[ServiceKey]:
    """The services health may act on: those with acting checks, and those with a sorry server."""
    return list(dict.fromkeys([*(skey for skey, _ in health), *sorry]))


def find_sorry(svc: Service, match: DestMatch) -> DestKey | str:
    """The dest of `svc` that `match` names, or why there is none to raise."""
    found = [
        d.key
        for d in svc.dests
        if (d.family, d.address) == (match.family, match.address) and match.port in (0, d.port)
    ]
    if len(found) == 1:
        return found[0]
    name = f"[{match.address}]" if ":" in match.address else match.address
    name += f":{match.port}" if match.port else ""
    if not found:
        return f"sorry server {name} is not a dest of {svc.key}"
    return f"sorry server {name} matches {len(found)} dests of {svc.key}: give its port"


def why(h: DestHealth) -> str:
    """`check: last reason` of the check that decides the state."""
    for c in sorted(h.checks, key=lambda c: c.state is not h.state):
        if c.last is not None:
            return f"{c.check}: {c.last.reason}"
    return "not checked yet"


def decide(
    memory: Memory,
    health: Mapping[Key, Acting],
    snap: Snapshot,
    drains: Mapping[Key, DrainRecord],
    sorry: Mapping[ServiceKey, DestMatch] | None = None,
    managed: Mapping[ServiceKey, str] | None = None,
    ramping: Mapping[Key, int] | None = None,
    floor: int = 0,
) -> list[Action]:
    """The actions of one round, in order; updates `memory`.

    `managed`: services keepalived or ldirectord manage, with why; `ramping`: dests with a ramp health
    started, and its target weight; `floor`: the live weight a service keeps (Control's, at least 1)."""
    sorry = sorry or {}
    managed = managed or {}
    ramping = ramping or {}
    for key in [k for k in memory.seen if k not in health]:
        memory.forget(key)  # no longer checked by an acting check, or gone
    out: list[Action] = []
    for skey in services(health, sorry):
        svc = snap.service(skey)  # not every row of a big director: only the services health acts on
        if svc is None:
            continue
        keys = [(skey, d.key) for d in svc.dests if (skey, d.key) in health]
        match = sorry.get(svc.key)
        if svc.key in managed:
            for key in keys:
                memory.forget(key)  # acted on afresh from its state then, if it stops being managed
            message = f"health does not act on {svc.key}: {managed[svc.key]}"
            if (keys or match) and memory.tell(svc.key, message):
                out.append(Action(SKIP, svc.key, None, message))
            continue
        memory.told.pop(svc.key, None)
        if keys or match:
            out += _service(memory, svc, keys, health, drains, match, ramping, max(1, floor))
    return out


def _service(
    memory: Memory,
    svc: Service,
    keys: list[Key],
    health: Mapping[Key, Acting],
    drains: Mapping[Key, DrainRecord],
    match: DestMatch | None,
    ramping: Mapping[Key, int],
    need: int,
) -> list[Action]:
    skey = svc.key
    found = find_sorry(svc, match) if match is not None else None
    sorry = found if isinstance(found, DestKey) else None
    weights = {d.key: d.weight for d in svc.dests}
    ups: list[Key] = []
    downs: list[Key] = []
    for key in keys:
        if key[1] == sorry:
            continue  # health raises and lowers it; never drains or restores it
        h = health[key].health
        if memory.seen.get(key) != (h.state, h.since):
            memory.seen[key] = (h.state, h.since)
            memory.done.discard(key)
            memory.told.pop(key, None)
        if key in memory.done:
            continue
        if h.state is State.UP:
            ups.append(key)
        elif h.state is State.DOWN:
            downs.append(key)
        else:
            memory.done.add(key)  # unknown: nothing to do until it is up or down
    out: list[Action] = []
    for key in ups:
        rec = drains.get(key)
        if key in ramping or rec is None or weights[key[1]] > 0:
            memory.done.add(key)  # restoring, nothing to restore, or serving already
        elif rec.cause != "health":
            memory.done.add(key)
            by = f"{rec.actor} ({rec.reason})" if rec.reason else rec.actor
            message = f"stays drained: {by} drained it; health restores only its own drains"
            out.append(Action(KEEP, skey, key[1], message))
        else:
            memory.done.add(key)
            reason = f"health: up again ({why(health[key].health)})"
            out.append(Action(RESTORE, skey, key[1], reason, rec.previous, health[key].slow_start))
    live = sum(weights.values())
    raised = False
    for key in downs:
        weight = weights[key[1]]
        if weight == 0 and key not in ramping:
            memory.done.add(key)  # drained already, by health or anyone
            continue
        reason = f"health: down ({why(health[key].health)})"
        if live - weight < need and sorry is not None and weights[sorry] == 0 and not raised:
            raised = True
            live += need
            message = f"health: every other dest of {skey} is down, {key[1]} too ({why(health[key].health)})"
            out.append(Action(RAISE_SORRY, skey, sorry, message, need))
        if live - weight < need:
            if need > 1 and live - weight > 0:
                problem = f"its drain would take the live weight of {skey} to {live - weight}"
                problem += f", below the floor of {need}"
            else:
                problem = f"it holds the last live weight of {skey} (weight {weight})"
            fix = (
                "; a sorry_server would take over" if found is None else f"; {found}" if sorry is None else ""
            )
            message = f"not drained although down ({why(health[key].health)}): {problem}{fix}"
            if memory.tell(key, message):
                out.append(Action(REFUSE, skey, key[1], message))
            continue
        memory.done.add(key)
        out.append(Action(DRAIN, skey, key[1], reason, ramping.get(key)))
        live -= weight
    if sorry is not None and not raised and weights[sorry] > 0 and live - weights[sorry] >= need:
        reason = f"health: {skey} has live weight {live - weights[sorry]} without its sorry server"
        out.append(Action(LOWER_SORRY, skey, sorry, reason, 0))
    return out
