"""lvstop/health/act.py: what health drains, restores, raises and lowers, round after round.

A small world stands in for the kernel and Control: it applies the actions (weights, drain records with
their cause) and the checks' hysteresis runs on real probe results (state.advance), so each story goes
through fall and rise as the exporter's would.
"""

from __future__ import annotations

import dataclasses

import pytest

from lvstop.control import DrainRecord
from lvstop.health import act
from lvstop.health.act import Acting, Action, Memory, decide
from lvstop.health.config import DestMatch, parse
from lvstop.health.state import CheckHealth, ProbeResult, State, advance, combine, initial
from lvstop.model import AF_INET, Dest, DestKey, FwdMethod, Service, ServiceKey, Snapshot

WEB = ServiceKey.tcp("203.0.113.10", 80)
API = ServiceKey.tcp("203.0.113.10", 443)
FALL, RISE = 3, 2
OK = ProbeResult(True, 0.001, "connected")
BAD = ProbeResult(False, 0.001, "connection refused")


def dk(last: int) -> DestKey:
    return DestKey(AF_INET, f"192.0.2.{last}", 8080)


A, B, C, SORRY = dk(11), dk(12), dk(13), dk(99)


class World:
    """Weights, drain records and checks of one director; `round()` decides and applies like the actor."""

    def __init__(self, weights: dict[DestKey, int], *, sorry: DestKey | None = None, floor: int = 0) -> None:
        self.weights = {WEB: dict(weights)}
        self.checks: dict[tuple[ServiceKey, DestKey], CheckHealth] = {
            (WEB, d): initial("tcp") for d in weights if d != sorry
        }
        self.drains: dict[tuple[ServiceKey, DestKey], DrainRecord] = {}
        self.sorry = {WEB: DestMatch(AF_INET, sorry.address, sorry.port)} if sorry else {}
        self.memory = Memory()
        self.managed: dict[ServiceKey, str] = {}
        self.ramping: dict[tuple[ServiceKey, DestKey], int] = {}
        self.floor = floor
        self.now = 1000.0

    def probe(self, d: DestKey, result: ProbeResult, times: int = 1) -> None:
        for _ in range(times):
            self.now += 2
            self.checks[(WEB, d)] = advance(self.checks[(WEB, d)], result, self.now, FALL, RISE)

    def state(self, d: DestKey) -> State:
        return self.checks[(WEB, d)].state

    def snapshot(self) -> Snapshot:
        services = tuple(
            Service(
                s,
                "wrr",
                dests=tuple(Dest(AF_INET, d.address, d.port, FwdMethod.MASQ, w) for d, w in ws.items()),
            )
            for s, ws in self.weights.items()
        )
        return Snapshot("netlink", "test", self.now, self.now, services=services)

    def decide(self) -> list[Action]:
        health = {k: Acting(combine([h])) for k, h in self.checks.items()}
        return decide(
            self.memory,
            health,
            self.snapshot(),
            self.drains,
            self.sorry,
            self.managed,
            self.ramping,
            self.floor,
        )

    def round(self) -> list[tuple[str, str]]:
        """One round, applied; (kind, dest address) of each action."""
        actions = self.decide()
        for a in actions:
            assert a.dest is not None or a.kind == act.SKIP
            if a.dest is None:
                continue
            ws, key = self.weights[a.service], (a.service, a.dest)
            if a.kind == act.DRAIN:
                assert ws[a.dest] > 0 and sum(ws.values()) - ws[a.dest] >= max(
                    1, self.floor
                )  # Control's guard
                self.drains[key] = DrainRecord(a.weight or ws[a.dest], self.now, "health", a.reason, "health")
                ws[a.dest] = 0
            elif a.kind == act.RESTORE:
                assert a.weight == self.drains.pop(key).previous
                ws[a.dest] = a.weight
            elif a.kind in (act.RAISE_SORRY, act.LOWER_SORRY):
                assert a.weight is not None
                ws[a.dest] = a.weight
        return [(a.kind, a.dest.address if a.dest else str(a.service)) for a in actions]


def test_a_dest_is_drained_after_fall_failures_and_restored_after_rise_successes() -> None:
    w = World({A: 5, B: 3})
    w.probe(A, OK)
    w.probe(B, OK)
    assert w.round() == []  # up from the start: nothing drained, nothing to restore
    w.probe(B, BAD, FALL - 1)
    assert w.state(B) is State.UP and w.round() == []
    w.probe(B, BAD)
    assert w.state(B) is State.DOWN
    assert w.round() == [("drain", "192.0.2.12")]
    rec = w.drains[(WEB, B)]
    assert (rec.previous, rec.cause, rec.actor) == (3, "health", "health")
    assert rec.reason == "health: down (tcp: connection refused)"
    assert w.round() == [] and w.weights[WEB] == {A: 5, B: 0}  # once
    w.probe(B, OK, RISE - 1)
    assert w.round() == []
    w.probe(B, OK)
    assert w.round() == [("restore", "192.0.2.12")]
    assert w.weights[WEB] == {A: 5, B: 3} and w.drains == {}
    assert w.round() == []


def test_the_last_live_weight_is_never_drained_without_a_sorry_server() -> None:
    w = World({A: 5, B: 3})
    for d in (A, B):
        w.probe(d, OK)
        w.probe(d, BAD, FALL)
    actions = w.decide()
    assert [(a.kind, a.dest) for a in actions] == [("drain", A), ("refuse", B)]
    assert actions[1].reason == (
        "not drained although down (tcp: connection refused): it holds the last live weight of "
        f"{WEB} (weight 3); a sorry_server would take over"
    )
    w.memory = Memory()
    w.round()
    assert w.weights[WEB] == {A: 0, B: 3}
    assert w.round() == []  # the refusal is said once
    w.probe(A, OK, RISE)  # A serves again: B, still down, can go now
    assert w.round() == [("restore", "192.0.2.11")]
    assert w.round() == [("drain", "192.0.2.12")]
    assert w.weights[WEB] == {A: 5, B: 0}


def test_the_floor_counts_as_the_live_weight_to_keep() -> None:
    w = World({A: 5, B: 3, C: 2}, floor=4)
    for d in (A, B, C):
        w.probe(d, OK)
    w.probe(A, BAD, FALL)
    w.probe(B, BAD, FALL)
    actions = w.decide()
    assert [(a.kind, a.dest) for a in actions] == [("drain", A), ("refuse", B)]
    assert f"its drain would take the live weight of {WEB} to 2, below the floor of 4" in actions[1].reason


def test_a_sorry_server_takes_over_when_all_are_down_and_steps_back_after() -> None:
    w = World({A: 5, B: 3, SORRY: 0}, sorry=SORRY)
    for d in (A, B):
        w.probe(d, OK)
    assert w.round() == []
    w.probe(A, BAD, FALL)
    assert w.round() == [("drain", "192.0.2.11")]
    w.probe(B, BAD, FALL)
    actions = w.decide()
    assert [(a.kind, a.dest) for a in actions] == [("raise_sorry", SORRY), ("drain", B)]
    assert actions[0].weight == 1 and "every other dest" in actions[0].reason
    w.memory.seen.pop((WEB, B))  # decide() again from the same start
    w.round()
    assert w.weights[WEB] == {A: 0, B: 0, SORRY: 1}
    assert w.round() == []  # the sorry server stays while all are down
    w.probe(B, OK, RISE)
    assert w.round() == [("restore", "192.0.2.12")]
    assert w.round() == [("lower_sorry", "192.0.2.99")]  # once B has its weight back
    assert w.weights[WEB] == {A: 0, B: 3, SORRY: 0}
    assert w.round() == []


def test_a_sorry_server_that_is_not_there_is_named_in_the_refusal() -> None:
    w = World({A: 5}, sorry=None)
    w.sorry = {WEB: DestMatch(AF_INET, "192.0.2.98", 0)}
    w.probe(A, OK)
    w.probe(A, BAD, FALL)
    (refusal,) = w.decide()
    assert refusal.kind == "refuse"
    assert refusal.reason.endswith(f"; sorry server 192.0.2.98 is not a dest of {WEB}")


def test_an_operator_drain_stays_when_the_dest_turns_healthy() -> None:
    w = World({A: 5, B: 0})
    w.drains[(WEB, B)] = DrainRecord(3, 900.0, "alice", "kernel upgrade", "operator")
    w.probe(A, OK)
    w.probe(B, OK)
    actions = w.decide()
    assert [(a.kind, a.dest) for a in actions] == [("keep", B)]
    assert actions[0].reason == (
        "stays drained: alice (kernel upgrade) drained it; health restores only its own drains"
    )
    assert w.decide() == []
    w.probe(B, BAD, FALL)  # a flap: down (already at 0: nothing to drain) and up again
    w.probe(B, OK, RISE)
    assert w.round() == [("keep", "192.0.2.12")]
    assert w.weights[WEB][B] == 0 and w.drains[(WEB, B)].cause == "operator"


def test_an_operator_restore_of_a_down_dest_is_not_undone_until_it_goes_down_again() -> None:
    w = World({A: 5, B: 3})
    for d in (A, B):
        w.probe(d, OK)
    w.probe(B, BAD, FALL)
    assert w.round() == [("drain", "192.0.2.12")]
    del w.drains[(WEB, B)]
    w.weights[WEB][B] = 3  # the operator restores it, still down
    w.probe(B, BAD)
    assert w.round() == []
    w.probe(B, OK, RISE)
    w.probe(B, BAD, FALL)
    assert w.round() == [("drain", "192.0.2.12")]


def test_a_managed_service_is_skipped_and_said_once() -> None:
    w = World({A: 5, B: 3})
    w.managed[WEB] = "keepalived (pid 7) manages it (virtual_server 203.0.113.10 80, k.conf:3)"
    for d in (A, B):
        w.probe(d, OK)
    w.probe(B, BAD, FALL)
    actions = w.decide()
    assert actions == [
        Action(
            "skip",
            WEB,
            None,
            f"health does not act on {WEB}: keepalived (pid 7) manages it "
            "(virtual_server 203.0.113.10 80, k.conf:3)",
        )
    ]
    assert w.round() == [] and w.weights[WEB] == {A: 5, B: 3}
    del w.managed[WEB]  # keepalived stopped: the dest's state now is acted on
    assert w.round() == [("drain", "192.0.2.12")]


def test_flapping_is_acted_on_per_state_change_not_per_probe() -> None:
    w = World({A: 5, B: 3})
    for d in (A, B):
        w.probe(d, OK)
    kinds = []
    for _ in range(3):
        w.probe(B, BAD, FALL)
        kinds += w.round()
        w.probe(B, OK, 1)  # one lucky answer: rise is 2, still down
        kinds += w.round()
        w.probe(B, BAD, 1)
        w.probe(B, OK, RISE)
        kinds += w.round()
    assert kinds == [("drain", "192.0.2.12"), ("restore", "192.0.2.12")] * 3
    # down and up again between two rounds: the dest is up, still at weight 3, nothing to do
    w.probe(B, BAD, FALL)
    w.probe(B, OK, RISE)
    assert w.round() == [] and w.weights[WEB][B] == 3
    # up and down again between rounds while drained: a new down period, already at 0
    w.probe(B, BAD, FALL)
    assert w.round() == [("drain", "192.0.2.12")]
    w.probe(B, OK, RISE)
    w.probe(B, BAD, FALL)
    assert w.round() == [] and w.weights[WEB][B] == 0


def test_unknown_and_unchecked_dests_are_left_alone_and_count_as_live() -> None:
    w = World({A: 5, B: 3})
    del w.checks[(WEB, A)]  # no acting check: its weight is live and stays
    w.probe(B, BAD, FALL - 1)
    assert w.state(B) is State.UNKNOWN and w.round() == []
    w.probe(B, BAD)
    assert w.round() == [("drain", "192.0.2.12")]


def test_ramps_health_started_are_left_to_run_or_stopped_by_a_drain() -> None:
    w = World({A: 5, B: 0})
    w.drains[(WEB, B)] = DrainRecord(8, 900.0, "health", "health: down", "health")
    w.probe(A, OK)
    w.probe(B, OK)
    w.ramping[(WEB, B)] = 8
    assert w.decide() == []  # restoring already
    w.weights[WEB][B] = 2
    w.probe(B, BAD, FALL)
    (drain,) = w.decide()
    assert (drain.kind, drain.dest, drain.weight) == ("drain", B, 8)  # restore puts the ramp's target back


def test_a_failed_restore_is_tried_again_next_round() -> None:
    w = World({A: 5, B: 0})
    w.drains[(WEB, B)] = DrainRecord(3, 900.0, "health", "health: down", "health")
    w.probe(A, OK)
    w.probe(B, OK)
    assert [a.kind for a in w.decide()] == ["restore"]
    assert w.decide() == []  # once ...
    w.memory.failed((WEB, B))
    assert [a.kind for a in w.decide()] == ["restore"]  # ... unless the actor says it failed
    w.memory.failed((WEB, B))
    w.weights[WEB][B] = 3  # someone else restored it (and reconcile closes the record)
    assert w.decide() == []


def test_dests_that_vanish_are_forgotten() -> None:
    w = World({A: 5, B: 3})
    for d in (A, B):
        w.probe(d, OK)
    w.round()
    assert set(w.memory.seen) == {(WEB, A), (WEB, B)}
    del w.checks[(WEB, B)]
    w.round()
    assert set(w.memory.seen) == {(WEB, A)}


def test_acting_combines_only_the_checks_that_act() -> None:
    cfg = parse(
        "checks:\n"
        "  - {service: 'TCP 203.0.113.10:80', type: tcp, slow_start: 10s}\n"
        "  - {service: 'TCP 203.0.113.10:80', type: http, act: false}\n"
        "  - {service: 'TCP 203.0.113.10:80', dest: 192.0.2.11, type: tcp, name: deep, slow_start: 30s,"
        " sorry_server: '192.0.2.99:8080'}\n"
        "  - {service: 'TCP 203.0.113.10:443', type: tcp}\n"
    )
    up = advance(initial("tcp"), OK, 1.0, 3, 2)
    down = dataclasses.replace(up, state=State.DOWN, since=2.0)
    items = [
        ((0, WEB, A), up),
        ((1, WEB, A), down),  # http, act: false: its down does not count
        ((2, WEB, A), up),
        ((0, WEB, B), up),
        ((1, WEB, B), down),
        ((3, API, A), down),
    ]
    on = act.acting(items, cfg, True)
    assert {k: (v.health.state, v.slow_start) for k, v in on.items()} == {
        (WEB, A): (State.UP, 30.0),
        (WEB, B): (State.UP, 10.0),
        (API, A): (State.DOWN, 0.0),
    }
    assert act.acting(items, cfg, False) == {}
    assert act.sorry_servers(cfg, True) == {WEB: DestMatch(AF_INET, "192.0.2.99", 8080)}
    assert act.sorry_servers(cfg, False) == {}


@pytest.mark.parametrize(
    ("match", "found"),
    [
        (DestMatch(AF_INET, "192.0.2.99", 0), SORRY),
        (DestMatch(AF_INET, "192.0.2.99", 8080), SORRY),
        (DestMatch(AF_INET, "192.0.2.99", 81), f"sorry server 192.0.2.99:81 is not a dest of {WEB}"),
        (
            DestMatch(AF_INET, "192.0.2.11", 0),
            f"sorry server 192.0.2.11 matches 2 dests of {WEB}: give its port",
        ),
    ],
)
def test_find_sorry(match: DestMatch, found: DestKey | str) -> None:
    dests = (
        Dest(AF_INET, "192.0.2.99", 8080, FwdMethod.MASQ, 0),
        Dest(AF_INET, "192.0.2.11", 8080, FwdMethod.MASQ, 1),
        Dest(AF_INET, "192.0.2.11", 8081, FwdMethod.MASQ, 1),
    )
    assert act.find_sorry(Service(WEB, "rr", dests=dests), match) == found
