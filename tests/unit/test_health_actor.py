"""lvstop/health/actor.py: act.decide()'s actions carried out through Control, with audit lines and events;
refusals and failures said once and tried again; slow start through a ramp; sorry servers."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lvstop.cli import Environment, main
from lvstop.control import Control
from lvstop.events import HEALTH_ACT, EventLog
from lvstop.exporter.ramp import Ramps
from lvstop.health.actor import HealthActor
from lvstop.health.config import parse
from lvstop.health.state import CheckHealth, ProbeResult, State
from lvstop.model import AF_INET, Dest, DestKey, FwdMethod, Service, ServiceKey, Snapshot

WEB = ServiceKey.tcp("203.0.113.10", 80)
A, B, SORRY = (DestKey(AF_INET, f"192.0.2.{i}", 8080) for i in (11, 12, 99))
CONFIG = parse(
    "checks:\n  - service: 'TCP 203.0.113.10:80'\n    type: tcp\n    sorry_server: 192.0.2.99:8080\n",
    "h.yaml",
)


class Director:
    """One service in memory with the read/get_dest/set_dest of NetlinkSource."""

    def __init__(self, weights: dict[DestKey, int]) -> None:
        self.weights = dict(weights)
        self.fail: Exception | None = None

    def read(self) -> Snapshot:
        dests = tuple(Dest(AF_INET, d.address, d.port, FwdMethod.MASQ, w) for d, w in self.weights.items())
        return Snapshot("netlink", "test", 0.0, 0.0, services=(Service(WEB, "wrr", dests=dests),))

    def get_dest(self, skey: ServiceKey, dkey: DestKey) -> Dest | None:
        svc = self.read().service(skey)
        return svc.dest(dkey) if svc is not None else None

    def set_dest(self, skey: ServiceKey, dest: Dest) -> None:
        if self.fail is not None:
            raise self.fail
        self.weights[dest.key] = dest.weight


class World:
    def __init__(self, tmp_path: Path, weights: dict[DestKey, int], config: Any = CONFIG) -> None:
        self.director = Director(weights)
        self.events = EventLog()
        proc = tmp_path / "proc"
        proc.mkdir(exist_ok=True)
        self.control = Control(self.director, tmp_path / "drains.json", self.events, proc_root=str(proc))
        self.audit: list[dict[str, Any]] = []
        self.states: dict[DestKey, State] = {}
        self.ramps = Ramps(self.control, lambda *a: None, wait=lambda ev, s: ev.is_set())
        self.actor = HealthActor(
            config,
            self.control,
            self.checks,
            flag=True,
            ramps=self.ramps,
            audit=lambda **f: self.audit.append(f),
            events=self.events,
        )
        self.now = 100.0

    def checks(self) -> list[tuple[tuple[int, ServiceKey, DestKey], CheckHealth]]:
        out = []
        for d, st in self.states.items():
            ok = st is State.UP
            last = ProbeResult(ok, 0.001, "connected" if ok else "connection refused")
            out.append(((0, WEB, d), CheckHealth("tcp", st, self.since[d], last, self.now)))
        return out

    def set(self, d: DestKey, state: State) -> None:
        self.now += 1
        self.since = getattr(self, "since", {})
        self.since[d] = self.now
        self.states[d] = state

    def round(self) -> list[tuple[str, str]]:
        return [(a.kind, outcome) for a, outcome, _ in self.actor.round(self.director.read())]

    def said(self) -> list[str]:
        return [e.message for e in self.events.recent() if e.kind == HEALTH_ACT]


def test_drain_and_restore_as_actor_health(tmp_path: Path) -> None:
    w = World(tmp_path, {A: 5, B: 3, SORRY: 0})
    w.set(A, State.UP)
    w.set(B, State.DOWN)
    assert w.round() == [("drain", "applied")]
    assert w.director.weights == {A: 5, B: 0, SORRY: 0}
    rec = w.control.drains()[(WEB, B)]
    assert (rec.actor, rec.cause, rec.previous) == ("health", "health", 3)
    (line,) = w.audit
    assert {k: line[k] for k in ("actor", "source", "action", "outcome", "status", "old", "requested")} == {
        "actor": "health",
        "source": "health",
        "action": "drain",
        "outcome": "applied",
        "status": 200,
        "old": 3,
        "requested": 0,
    }
    assert w.said() == [
        f"health drained {B} of {WEB} (weight 3 -> 0): health: down (tcp: connection refused)"
    ]
    w.set(B, State.UP)
    assert w.round() == [("restore", "applied")]
    assert w.director.weights[B] == 3 and w.control.drains() == {}
    assert w.audit[-1]["action"] == "restore" and w.audit[-1]["verified"] == 3


def test_sorry_server_raised_before_the_last_drain_and_lowered_after(tmp_path: Path) -> None:
    w = World(tmp_path, {A: 5, B: 3, SORRY: 0})
    w.set(A, State.DOWN)
    w.set(B, State.DOWN)
    assert w.round() == [("drain", "applied"), ("raise_sorry", "applied"), ("drain", "applied")]
    assert w.director.weights == {A: 0, B: 0, SORRY: 1}
    assert [a["action"] for a in w.audit] == ["drain", "set_weight", "drain"]
    w.set(A, State.UP)
    assert w.round() == [("restore", "applied")]
    assert w.round() == [("lower_sorry", "applied")]
    assert w.director.weights == {A: 5, B: 0, SORRY: 0}
    assert w.said()[-1] == f"health lowered sorry server {SORRY} of {WEB} (weight 1 -> 0): " + (
        f"health: {WEB} has live weight 5 without its sorry server"
    )


def test_refusals_and_failures_are_said_once_and_tried_again(tmp_path: Path) -> None:
    config = parse("checks:\n  - {service: 'TCP 203.0.113.10:80', type: tcp}\n", "h.yaml")
    w = World(tmp_path, {A: 5, B: 3}, config)
    w.set(A, State.DOWN)
    w.set(B, State.DOWN)
    assert w.round() == [("drain", "applied"), ("refuse", "refused")]
    assert w.audit[-1]["outcome"] == "rejected" and w.audit[-1]["status"] == 409
    assert "it holds the last live weight" in w.said()[-1]
    assert w.round() == []
    # a write that fails is said once, and tried again each round
    w.director.fail = OSError("netlink: Operation not permitted")
    w.set(A, State.UP)
    assert w.round() == [("restore", "failed")]
    assert w.round() == [("restore", "failed")]
    assert len([m for m in w.said() if "could not restore" in m]) == 1
    assert [a["outcome"] for a in w.audit[-2:]] == ["failed", "failed"]
    w.director.fail = None
    assert w.round() == [("restore", "applied")]
    assert w.round() == [("drain", "applied")]  # B, with A's weight back in the next snapshot
    assert w.director.weights == {A: 5, B: 0}


def test_slow_start_restores_through_a_ramp(tmp_path: Path) -> None:
    config = parse("checks:\n  - {service: 'TCP 203.0.113.10:80', type: tcp, slow_start: 10s}\n", "h.yaml")
    w = World(tmp_path, {A: 5, B: 3}, config)
    w.control.drain(WEB, A, actor="health", cause="health")
    w.set(A, State.UP)
    w.set(B, State.UP)
    assert w.round() == [("restore", "applied")]
    (ramp,) = w.ramps.list()
    assert (ramp.actor, ramp.target, ramp.start) == ("health", 5, 0)
    assert ramp.thread is not None
    ramp.thread.join(10)
    assert ramp.state == "done" and ramp.steps == [(5.0, 2), (10.0, 5)]
    assert w.director.weights[A] == 5 and w.control.drains() == {}
    assert w.audit[-1]["action"] == "ramp" and w.audit[-1]["requested"] == 5
    assert w.said()[-1].startswith(f"health started a slow start of {A} of {WEB} to weight 5 over 10 s")


def test_a_drain_stops_a_ramp_and_remembers_its_target(tmp_path: Path) -> None:
    w = World(tmp_path, {A: 2, B: 3, SORRY: 0})
    # a ramp that waits for its first step until it is cancelled
    w.ramps = w.actor.ramps = Ramps(w.control, lambda *a: None, wait=lambda ev, s: ev.wait(30))
    w.ramps.start(WEB, A, 8, 30.0, None, expect=None, force=False, reason=None, dry_run=False, actor="health")
    w.set(A, State.DOWN)
    w.set(B, State.UP)
    assert w.round() == [("drain", "applied")]
    (ramp,) = w.ramps.list()
    assert ramp.state == "cancelled"
    assert w.control.drains()[(WEB, A)].previous == 8


def test_an_unreadable_drain_state_stops_acting_and_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w = World(tmp_path, {A: 5, B: 3})
    (tmp_path / "drains.json").write_text("{")
    w.set(B, State.DOWN)
    assert w.round() == [] and w.round() == []
    assert len([r for r in caplog.records if "drain state cannot be read" in r.getMessage()]) == 1
    (tmp_path / "drains.json").unlink()
    assert w.round() == [("drain", "applied")]


def test_the_thread_acts_on_submitted_snapshots(tmp_path: Path) -> None:
    w = World(tmp_path, {A: 5, B: 3})
    w.set(A, State.UP)
    w.set(B, State.DOWN)
    w.actor.start()
    try:
        w.actor.submit(w.director.read())
        done = threading.Event()
        for _ in range(200):
            if w.director.weights[B] == 0:
                done.set()
                break
            done.wait(0.05)
        assert done.is_set()
    finally:
        w.actor.stop()
    assert dataclasses.asdict(w.control.drains()[(WEB, B)])["cause"] == "health"


def test_the_thread_waits_for_a_new_poll_after_a_write(tmp_path: Path) -> None:
    """A round on the snapshot it just wrote through, or on the next one (its read may have begun before
    the write), would see old weights: the guard, re-reading them, would refuse what the round decided."""
    w = World(tmp_path, {A: 5, B: 3}, parse("checks:\n  - {service: 'TCP 203.0.113.10:80', type: tcp}\n"))
    w.set(A, State.DOWN)
    w.set(B, State.UP)
    first = w.director.read()
    w.actor.start()
    try:
        w.actor.submit(first)
        _until(lambda: w.director.weights[A] == 0)
        w.set(B, State.DOWN)
        w.actor.wake()  # a state change, no new poll yet
        time.sleep(0.3)
        assert not [m for m in w.said() if "could not" in m]
        said = len(w.said())
        w.actor.submit(w.director.read())  # the first poll after a write may have read before it
        time.sleep(0.3)
        assert len(w.said()) == said
        w.actor.submit(w.director.read())
        _until(lambda: any("not drained although down" in m for m in w.said()))
    finally:
        w.actor.stop()
    assert w.director.weights == {A: 0, B: 3}


def _until(cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_lvstop_health_acts_on_the_demo_and_prints_what_it_did(tmp_path: Path) -> None:
    cfg = tmp_path / "h.yaml"
    cfg.write_text(
        "checks:\n  - {service: 'TCP 203.0.113.11:8080', type: tcp, interval: 50ms, jitter: 0, fall: 1}\n"
    )
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdin=io.StringIO(), stdout=out, stderr=err)
    argv = [
        "--demo",
        "health",
        "--health.config",
        str(cfg),
        "--health.act",
        "--count",
        "8",
        "--interval",
        "0.2",
    ]
    assert main(argv, env) == 0, err.getvalue()
    said = [line for line in out.getvalue().splitlines() if " health drained " in line]
    assert len(said) == 1 and said[0].endswith(
        "health drained 192.0.2.24:8080 of TCP 203.0.113.11:8080 (weight 2 -> 0): "
        "health: down (tcp: timed out after 2 s)"
    )
    (audit,) = [json.loads(line) for line in err.getvalue().splitlines()]
    assert (audit["actor"], audit["action"], audit["outcome"]) == ("health", "drain", "applied")
    assert main([*argv[:5], "--once"], env) == 2
    assert "--health.act acts on state changes, which --once does not wait for" in err.getvalue()
