"""Carrying out act.decide()'s actions: through Control (every guard), with audit lines and events.

One HealthActor per process that acts (`lvstop-exporter --health.act`, `lvstop health --health.act`).
A round takes the latest snapshot, the checks' states, the drain records, the ramps health runs and the
services keepalived or ldirectord manage; decides; then drains, restores (through a ramp when the
checks ask for slow start), raises or lowers sorry servers, as actor `health`. Every action and every
refusal is one `health_act` event with its reason, and every write attempted or refused one audit line.
Rounds run in a thread of their own (after each poll, and at once when a check changes state), so a
write never holds up the poller.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lvstop.codec import dest_key_to_dict, service_key_to_dict
from lvstop.control import Control, ControlResult
from lvstop.errors import ControlError, LvstopError
from lvstop.events import HEALTH_ACT, Event, EventLog
from lvstop.health import act
from lvstop.health.act import Action, Key, Memory
from lvstop.health.config import HealthConfig
from lvstop.health.state import CheckHealth
from lvstop.managers import claims
from lvstop.model import ServiceKey, Snapshot

if TYPE_CHECKING:
    from lvstop.exporter.ramp import Ramp, Ramps
    from lvstop.health.runner import PairKey

log = logging.getLogger("lvstop.health")

ACTOR = "health"
CLAIMS_TTL = 30.0  # seconds between re-reads of keepalived's and ldirectord's configurations
Audit = Callable[..., object]  # AuditLog.write's keywords
Checks = Callable[[], "list[tuple[PairKey, CheckHealth]]"]


class HealthActor:
    def __init__(
        self,
        config: HealthConfig,
        control: Control,
        checks: Checks,
        *,
        flag: bool,
        ramps: Ramps | None = None,
        audit: Audit | None = None,
        events: EventLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`checks`: HealthRunner.checks; `flag`: --health.act (checks without `act:` follow it)."""
        self.config = config
        self.control = control
        self._checks = checks
        self.flag = flag
        self.ramps = ramps
        self._audit = audit
        self.events = events
        self._clock = clock
        self._sorry = act.sorry_servers(config, flag)
        self.memory = Memory()
        self.managed: dict[ServiceKey, str] = {}  # services skipped in the last round, and why
        self._claims: tuple[tuple[tuple[str, int], ...], float, dict[ServiceKey, str], str | None] | None = (
            None
        )
        self._lock = threading.Lock()  # one round at a time
        self._latest: Snapshot | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the thread ---

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="lvstop-health-act", daemon=True)
        self._thread.start()

    def submit(self, snap: Snapshot) -> None:
        """A new snapshot (a poller subscriber): a round soon, in the actor's thread."""
        self._latest = snap
        self._wake.set()

    def wake(self, *_: object) -> None:
        """A check changed state (the runner's on_transition): a round now, on the latest snapshot."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _main(self) -> None:
        old: Snapshot | None = None  # the newest snapshot whose weights may predate the last write
        after_write = False
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping.is_set():
                return
            snap = self._latest
            if snap is None or snap is old:
                continue  # the next poll wakes us again
            if after_write:  # the first poll after a write may have read before it (seen on 6.12)
                old, after_write = snap, False
                continue
            try:
                if any(outcome == "applied" for _, outcome, _ in self.round(snap)):
                    old, after_write = snap, True
            except Exception:  # a bug must not end acting for good: said, and the next round tries again
                log.exception("health: a round of acting failed")

    # --- one round ---

    def round(self, snap: Snapshot) -> list[tuple[Action, str, str]]:
        """Decide and act on `snap`: (action, outcome, message) of each, in order."""
        with self._lock:
            items = self._checks()
            try:
                drains = self.control.drains()
            except LvstopError as e:
                if self.memory.tell("drain state", str(e)):
                    log.error("health: not acting while the drain state cannot be read: %s", e)
                return []
            self.memory.told.pop("drain state", None)
            running = {
                (r.service, r.dest): r
                for r in (self.ramps.list() if self.ramps is not None else [])
                if r.state == "running" and r.actor == ACTOR
            }
            health = act.acting(items, self.config, self.flag)
            actions = act.decide(
                self.memory,
                health,
                snap,
                drains,
                self._sorry,
                self._managed(act.services(health, self._sorry)),
                {k: r.target for k, r in running.items()},
                self.control.floor,
            )
            return [self._do(a, running) for a in actions]

    def _managed(self, services: list[ServiceKey]) -> dict[ServiceKey, str]:
        """Which of `services` keepalived or ldirectord manage (or may: a configuration it cannot read)."""
        running = self.control.managers()
        now = time.monotonic()
        if not running:
            self._claims = None
        elif self._claims is None or self._claims[0] != running or now - self._claims[1] > CLAIMS_TTL:
            owned: dict[ServiceKey, str] = {}
            unknown: str | None = None
            netns = getattr(self.control.target, "netns", None)
            for name, pid, what in claims(running, self.control.managers.proc_root, netns):
                if isinstance(what, str):
                    unknown = f"{name} (pid {pid}) runs and its configuration could not be read ({what})"
                    continue
                for m in what:
                    owned.setdefault(m.key, f"{name} (pid {pid}) manages it ({m.block}, {m.where})")
            self._claims = (running, now, owned, unknown)
        if self._claims is None:
            self.managed = {}
        else:
            _, _, owned, unknown = self._claims
            self.managed = {
                s: owned.get(s) or f"{unknown}: it may manage it"
                for s in services
                if s in owned or unknown is not None
            }
        return self.managed

    def _do(self, a: Action, running: dict[Key, Ramp]) -> tuple[Action, str, str]:
        if a.kind == act.SKIP:
            log.warning("%s", a.reason)
            return self._said(a, "skipped", a.reason)
        if a.kind == act.KEEP:
            message = f"health left {a.dest} of {a.service} drained: {a.reason}"
            log.info("%s", message)
            return self._said(a, "kept", message)
        assert a.dest is not None
        key = (a.service, a.dest)
        if a.kind == act.REFUSE:
            message = f"health did not drain {a.dest} of {a.service}: {a.reason}"
            self._write_audit(a, "drain", "rejected", 409, error=a.reason)
            log.warning("%s", message)
            return self._said(a, "refused", message)
        try:
            action, res = self._write(a, running.get(key))
        except LvstopError as e:
            status = e.status if isinstance(e, ControlError) else 500
            outcome = "rejected" if status < 500 else "failed"
            old = getattr(e, "old", None)
            self.memory.failed(key)  # tried again next round, said once
            self._write_audit(a, _CONTROL_ACTION[a.kind], outcome, status, old=old, error=str(e))
            message = f"health could not {_VERB[a.kind]} {a.dest} of {a.service}: {e}"
            if self.memory.tell(key, message):
                log.warning("%s", message)
                return self._said(a, outcome, message)
            return a, outcome, message
        if res is None:  # a ramp started: its steps have audit lines of their own
            message = f"health started a slow start of {a.dest} of {a.service} to weight {a.weight} "
            message += f"over {a.slow_start:g} s: {a.reason}"
            self._write_audit(a, "ramp", "applied", 202, old=0, requested=a.weight)
            log.info("%s", message)
            return self._said(a, "applied", message)
        self._write_audit(
            a, action, res.outcome, 200, old=res.old, requested=res.requested, verified=res.verified
        )
        if res.outcome == "unchanged":
            message = f"health: {a.dest} of {a.service} already at weight {res.old}: {a.reason}"
        else:
            message = f"health {_DONE[a.kind]} {a.dest} of {a.service} "
            message += f"(weight {res.old} -> {res.requested}): {a.reason}"
        log.info("%s", message)
        return self._said(a, res.outcome, message, res)

    def _write(self, a: Action, ramp: Ramp | None) -> tuple[str, ControlResult | None]:
        assert a.dest is not None
        c = self.control
        if a.kind == act.DRAIN:
            if ramp is not None and self.ramps is not None:
                self.ramps.cancel(ramp.id)  # its next step would undo the drain
            return "drain", c.drain(
                a.service, a.dest, reason=a.reason, actor=ACTOR, cause="health", remember=a.weight
            )
        if a.kind == act.RESTORE:
            if a.slow_start > 0 and self.ramps is not None and a.weight is not None:
                self.ramps.start(
                    a.service,
                    a.dest,
                    a.weight,
                    a.slow_start,
                    None,
                    expect=0,
                    force=False,
                    reason=a.reason,
                    dry_run=False,
                    actor=ACTOR,
                )
                return "ramp", None
            return "restore", c.restore(a.service, a.dest, reason=a.reason, actor=ACTOR)
        assert a.weight is not None  # raise_sorry, lower_sorry
        return "set_weight", c.set_weight(a.service, a.dest, a.weight, reason=a.reason, actor=ACTOR)

    def _said(
        self, a: Action, outcome: str, message: str, res: ControlResult | None = None
    ) -> tuple[Action, str, str]:
        if self.events is not None:
            old, new = (res.old, res.requested) if res is not None and outcome == "applied" else (None, None)
            self.events.append(
                Event(
                    self._clock(), HEALTH_ACT, message, a.service, a.dest, old, new, ACTOR, a.kind, a.reason
                )
            )
        return a, outcome, message

    def _write_audit(self, a: Action, action: str, outcome: str, status: int, **fields: Any) -> None:
        if self._audit is None:
            return
        self._audit(
            actor=ACTOR,
            source=ACTOR,
            action=action,
            outcome=outcome,
            status=status,
            service=service_key_to_dict(a.service),
            dest=None if a.dest is None else dest_key_to_dict(a.dest),
            requested=fields.pop("requested", 0 if a.kind in (act.DRAIN, act.REFUSE) else a.weight),
            force=False,
            reason=a.reason,
            **fields,
        )

    def ramp_step(self, ramp: Ramp, weight: int, res: ControlResult | None, err: LvstopError | None) -> None:
        """Ramps' on_step where no exporter writes the audit (`lvstop health`): one line per step."""
        if self._audit is None:
            return
        status = 200 if err is None else err.status if isinstance(err, ControlError) else 500
        self._audit(
            actor=ramp.actor,
            source=f"ramp {ramp.id}",
            action="ramp_step",
            outcome=res.outcome if res is not None else "rejected" if status < 500 else "failed",
            status=status,
            service=service_key_to_dict(ramp.service),
            dest=dest_key_to_dict(ramp.dest),
            old=res.old if res is not None else getattr(err, "old", None),
            requested=weight,
            verified=res.verified if res is not None else None,
            force=ramp.force,
            reason=ramp.reason,
            error=None if err is None else str(err),
        )

    def status(self) -> dict[str, Any]:
        """For /api/v1/status: acting is on, and the services it leaves alone."""
        return {
            "enabled": True,
            "skipped": [
                {"service": service_key_to_dict(s), "text": str(s), "reason": r}
                for s, r in sorted(self.managed.items())
            ],
        }


_CONTROL_ACTION = {
    act.DRAIN: "drain",
    act.RESTORE: "restore",
    act.RAISE_SORRY: "set_weight",
    act.LOWER_SORRY: "set_weight",
}
_VERB = {act.DRAIN: "drain", act.RESTORE: "restore", act.RAISE_SORRY: "raise", act.LOWER_SORRY: "lower"}
_DONE = {
    act.DRAIN: "drained",
    act.RESTORE: "restored",
    act.RAISE_SORRY: "raised sorry server",
    act.LOWER_SORRY: "lowered sorry server",
}
