"""Ramps: a weight changed in steps over a given time, through Control, cancellable.

Each step is a compare-and-set on the weight the previous step wrote, so anything else touching the
dest (keepalived, an operator, a drain) stops the ramp instead of being overwritten. Ramps live in
memory: an exporter restart ends them where they stand (the weight stays at the last step).
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lvstop.codec import service_key_to_dict
from lvstop.control import MAX_WEIGHT, Control, ControlResult, EditError, dest_key_to_dict
from lvstop.errors import LvstopError
from lvstop.model import DestKey, ServiceKey

MAX_DURATION = 86400.0
MAX_STEPS = 1000
STEP_SECONDS = 5.0  # default spacing of steps when the caller gives none


def plan(start: int, target: int, duration: float, steps: int | None = None) -> list[tuple[float, int]]:
    """(seconds after the start, weight) for each step; equal consecutive weights are merged."""
    delta = target - start
    if steps is None:
        steps = max(1, min(abs(delta), math.ceil(duration / STEP_SECONDS)))
    out: list[tuple[float, int]] = []
    prev = start
    for i in range(1, steps + 1):
        w = start + round(delta * i / steps)
        if w != prev:
            out.append((duration * i / steps, w))
            prev = w
    return out


@dataclass(slots=True)
class Ramp:
    id: str
    service: ServiceKey
    dest: DestKey
    start: int
    target: int
    steps: list[tuple[float, int]]
    actor: str
    reason: str | None
    force: bool
    created: float
    state: str = "running"  # running | done | cancelled | failed
    current: int = 0
    error: str | None = None
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "service": service_key_to_dict(self.service),
            "dest": dest_key_to_dict(self.dest),
            "start": self.start,
            "target": self.target,
            "current": self.current,
            "steps": [{"at": at, "weight": w} for at, w in self.steps],
            "state": self.state,
            "actor": self.actor,
            "reason": self.reason,
            "created": self.created,
            "finished": self.finished,
            "error": self.error,
        }


StepHook = Callable[[Ramp, int, ControlResult | None, LvstopError | None], None]


class Ramps:
    """Runs ramps, one thread each; `on_step` sees every step's result or error (for the audit log)."""

    def __init__(
        self,
        control: Control,
        on_step: StepHook,
        clock: Callable[[], float] = time.time,
        keep: int = 100,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wait: Callable[[threading.Event, float], bool] = threading.Event.wait,
    ) -> None:
        """`monotonic` and `wait(cancel, seconds)` (True when cancelled) time the steps; tests step them."""
        self.control = control
        self.on_step = on_step
        self._clock = clock
        self._monotonic = monotonic
        self._wait = wait
        self._keep = keep
        self._ramps: dict[str, Ramp] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(
        self,
        skey: ServiceKey,
        dkey: DestKey,
        weight: int,
        duration: float,
        steps: int | None,
        *,
        expect: int | None,
        force: bool,
        reason: str | None,
        dry_run: bool,
        actor: str,
    ) -> tuple[ControlResult, Ramp | None, list[tuple[float, int]]]:
        """Check the final weight against every guard now (dry-run), then start stepping unless dry_run."""
        if (
            isinstance(duration, bool)
            or not isinstance(duration, int | float)
            or not 0 <= duration <= MAX_DURATION
        ):
            raise EditError(
                f"duration must be a number of seconds 0..{MAX_DURATION:g}, not {duration!r}", status=400
            )
        if steps is not None and (type(steps) is not int or not 1 <= steps <= MAX_STEPS):
            raise EditError(f"steps must be an integer 1..{MAX_STEPS}, not {steps!r}", status=400)
        if type(weight) is not int or not 0 <= weight <= MAX_WEIGHT:
            raise EditError(f"weight must be an integer 0..{MAX_WEIGHT}, not {weight!r}", status=400)
        with self._lock:
            busy = next(
                (
                    r
                    for r in self._ramps.values()
                    if r.state == "running" and (r.service, r.dest) == (skey, dkey)
                ),
                None,
            )
            if busy is not None:
                raise EditError(f"ramp {busy.id} is already running on {dkey} in {skey}", status=409)
            check = self.control.set_weight(
                skey, dkey, weight, expect=expect, force=force, reason=reason, dry_run=True, actor=actor
            )
            steps_plan = plan(check.old, weight, float(duration), steps)
            if dry_run or not steps_plan:
                return check, None, steps_plan
            ramp = Ramp(
                f"r{next(self._ids)}",
                skey,
                dkey,
                check.old,
                weight,
                steps_plan,
                actor,
                reason,
                force,
                self._clock(),
            )
            ramp.current = check.old
            self._ramps[ramp.id] = ramp
            self._trim()
        ramp.thread = threading.Thread(target=self._run, args=(ramp,), name=f"ramp-{ramp.id}", daemon=True)
        ramp.thread.start()
        return check, ramp, steps_plan

    def cancel(self, ramp_id: str) -> Ramp:
        with self._lock:
            ramp = self._ramps.get(ramp_id)
        if ramp is None:
            raise EditError(f"no ramp {ramp_id}", status=404)
        if ramp.state != "running":
            raise EditError(f"ramp {ramp_id} is already {ramp.state}", status=409, old=ramp.current)
        ramp.cancel.set()
        if ramp.thread is not None:
            ramp.thread.join(timeout=10)
        return ramp

    def list(self) -> list[Ramp]:
        with self._lock:
            return list(self._ramps.values())

    def stop(self) -> None:
        for r in self.list():
            r.cancel.set()
        for r in self.list():
            if r.thread is not None:
                r.thread.join(timeout=10)

    def _trim(self) -> None:
        done = [k for k, r in self._ramps.items() if r.state != "running"]
        for k in done[: max(0, len(self._ramps) - self._keep)]:
            del self._ramps[k]

    def _run(self, ramp: Ramp) -> None:
        t0 = self._monotonic()
        for at, weight in ramp.steps:
            if self._wait(ramp.cancel, max(0.0, at - (self._monotonic() - t0))):
                ramp.state = "cancelled"
                break
            try:
                res = self.control.set_weight(
                    ramp.service,
                    ramp.dest,
                    weight,
                    expect=ramp.current,
                    force=ramp.force,
                    reason=ramp.reason,
                    dry_run=False,
                    actor=f"{ramp.actor} (ramp {ramp.id})",
                )
            except LvstopError as e:  # a refusal, a failed write or an unreadable drain state
                ramp.state, ramp.error = "failed", str(e)
                self.on_step(ramp, weight, None, e)
                break
            ramp.current = weight
            self.on_step(ramp, weight, res, None)
        else:
            ramp.state = "done"
        ramp.finished = self._clock()
