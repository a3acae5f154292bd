"""Hysteresis (fall/rise), jitter bounds, which dests a check applies to, the scheduler, the demo's results,
and `lvstop health` end to end (the demo, and loopback listeners)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvstop.cli import Environment, main
from lvstop.errors import SourceError
from lvstop.health.checks import Starter, Target
from lvstop.health.config import CheckSpec, DestMatch, HealthConfig, parse
from lvstop.health.runner import (
    FLAP_DOWN,
    FLAP_PERIOD,
    Book,
    HealthRunner,
    HealthView,
    Pairs,
    Scheduler,
    SimProber,
    Skipped,
    next_delay,
    targets,
)
from lvstop.health.state import ProbeResult, State, Transition, advance, combine, initial
from lvstop.model import AF_INET, Dest, DestKey, FwdMethod, Service, ServiceKey, Snapshot

OK = ProbeResult(True, 0.001, "connected")
BAD = ProbeResult(False, 0.001, "connection refused")


def run_states(results: str, fall: int = 3, rise: int = 2) -> list[State]:
    h = initial("tcp")
    out = []
    for i, c in enumerate(results):
        h = advance(h, OK if c == "+" else BAD, float(i), fall, rise)
        out.append(h.state)
    return out


def test_fall_and_rise() -> None:
    U, D, N = State.UP, State.DOWN, State.UNKNOWN
    assert run_states("+") == [U]  # a first success: up at once
    assert run_states("---") == [N, N, D]  # from unknown: fall failures
    assert run_states("+--+---") == [U, U, U, U, U, U, D]  # a success in between starts the count again
    assert run_states("+---+-++") == [U, U, U, D, D, D, D, U]  # rise 2: in a row
    assert run_states("+-+", fall=1, rise=1) == [U, D, U]


def test_since_moves_only_on_a_transition() -> None:
    h = initial("tcp")
    h = advance(h, OK, 10.0, 3, 2)
    h = advance(h, OK, 12.0, 3, 2)
    assert (h.state, h.since, h.last_time, h.successes) == (State.UP, 10.0, 12.0, 2)
    for t in (14.0, 16.0, 18.0):
        h = advance(h, BAD, t, 3, 2)
    assert (h.state, h.since, h.failures, h.last) == (State.DOWN, 18.0, 3, BAD)


def test_a_dest_with_several_checks() -> None:
    up = advance(initial("tcp"), OK, 5.0, 3, 2)
    up2 = advance(initial("http"), OK, 7.0, 3, 2)
    down = advance(advance(advance(initial("http"), BAD, 1, 1, 1), BAD, 2, 1, 1), BAD, 3, 1, 1)
    assert combine([up, up2]).state is State.UP and combine([up, up2]).since == 7.0
    assert combine([up, down]).state is State.DOWN and combine([up, down]).reason == "connection refused"
    assert combine([up, initial("dns")]).state is State.UNKNOWN
    assert combine([initial("dns")]).reason == "not checked yet"


@given(st.floats(0.01, 3600), st.floats(0, 1), st.integers(0, 2**32))
def test_jitter_stays_within_its_bounds(interval: float, share: float, seed: int) -> None:
    spec = CheckSpec("tcp", None, 1, interval=interval, jitter=interval * share * 0.99)
    rng = random.Random(seed)
    for _ in range(20):
        delay = next_delay(spec, rng)
        assert interval - spec.jitter <= delay <= interval + spec.jitter
        assert delay > 0


def test_jitter_spreads_the_probes() -> None:
    spec = CheckSpec("tcp", None, 1, interval=2.0, jitter=0.5)
    rng = random.Random(1)
    delays = [next_delay(spec, rng) for _ in range(1000)]
    assert min(delays) < 1.6 and max(delays) > 2.4


WEB = ServiceKey.tcp("203.0.113.10", 80)
MARK = ServiceKey.mark(1)


def dest(address: str, port: int, weight: int = 1) -> Dest:
    return Dest(AF_INET, address, port, FwdMethod.ROUTE, weight)


def snapshot(*services: Service) -> Snapshot:
    return Snapshot("netlink", "lab", 0.0, 0.0, services=services)


def test_targets_match_service_dest_and_port() -> None:
    cfg = parse(
        "checks:\n"
        "  - {service: '*', type: tcp}\n"
        "  - {service: 'TCP 203.0.113.10:80', dest: '192.0.2.12', type: http}\n"
        "  - {service: 'FWM 1', dest: '192.0.2.81', type: tcp, port: 443, name: tls}\n"
        "  - {service: 'TCP 203.0.113.10:80', dest: '192.0.2.11:9999', type: http}\n"
    )
    snap = snapshot(
        Service(WEB, "wlc", dests=(dest("192.0.2.11", 8080), dest("192.0.2.12", 8080))),
        Service(MARK, "wlc", dests=(dest("192.0.2.81", 0),)),
    )
    pairs, skipped = targets(cfg, snap)
    got = {(i, str(s), str(d), t.port) for (i, s, d), (_, t) in pairs.items()}
    assert got == {
        (0, "TCP 203.0.113.10:80", "192.0.2.11:8080", 8080),
        (0, "TCP 203.0.113.10:80", "192.0.2.12:8080", 8080),
        (1, "TCP 203.0.113.10:80", "192.0.2.12:8080", 8080),
        (2, "FWM 1", "192.0.2.81:0", 443),
    }
    assert [(str(s.dest), s.spec.type) for s in skipped] == [("192.0.2.81:0", "tcp")]
    assert "port 0" in skipped[0].reason
    assert cfg.checks[2].dest == DestMatch(AF_INET, "192.0.2.81", 0)


def from_prober(prober: Callable[[CheckSpec, Target], Awaitable[ProbeResult]]) -> Starter:
    def start(spec: CheckSpec, target: Target, done: Callable[[ProbeResult], None]) -> None:
        task = asyncio.ensure_future(prober(spec, target))  # an awaitable, not only a coroutine
        task.add_done_callback(lambda t: done(t.result()))

    return start


def retarget(book: Book, sched: Scheduler, pairs: Pairs) -> None:
    sched.apply(*book.set_targets(pairs))


def _pairs(n: int) -> Pairs:
    spec = CheckSpec("tcp", None, 1, interval=0.05, jitter=0.0, fall=2, rise=1)
    out = {}
    for i in range(n):
        d = DestKey(AF_INET, f"192.0.2.{i + 1}", 80)
        out[(0, WEB, d)] = (spec, Target(WEB, d, FwdMethod.ROUTE, 1, 80))
    return out


async def test_scheduler_bounds_concurrency_and_reports_transitions() -> None:
    running = peak = 0
    failing = {"192.0.2.2"}
    changes: list[Transition] = []

    async def prober(spec: CheckSpec, target: Target) -> ProbeResult:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return BAD if target.address in failing else OK

    book = Book(on_transition=changes.append)
    sched = Scheduler(book.record, from_prober(prober), concurrency=3, rng=random.Random(1))
    retarget(book, sched, _pairs(8))
    await asyncio.sleep(0.4)
    assert peak == 3
    states = {k[2].address: h.state for k, h in book.health.items()}
    assert states["192.0.2.2"] is State.DOWN and states["192.0.2.1"] is State.UP
    failing.clear()
    await asyncio.sleep(0.3)
    assert book.health[(0, WEB, DestKey(AF_INET, "192.0.2.2", 80))].state is State.UP
    mine = [(c.old, c.new) for c in changes if c.dest.address == "192.0.2.2"]
    assert mine == [(State.UNKNOWN, State.DOWN), (State.DOWN, State.UP)]
    retarget(book, sched, dict(list(_pairs(8).items())[:2]))  # six dests left the director
    assert len(book.health) == 2
    sched.stop()


async def test_the_next_probe_waits_for_the_last_one() -> None:
    starts: list[float] = []

    async def slow(spec: CheckSpec, target: Target) -> ProbeResult:
        starts.append(time.monotonic())
        await asyncio.sleep(0.15)  # three intervals
        return OK

    book = Book()
    sched = Scheduler(book.record, from_prober(slow))
    retarget(book, sched, _pairs(1))
    await asyncio.sleep(0.6)
    sched.stop()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps and all(g >= 0.15 for g in gaps)


def test_a_result_for_a_pair_that_left_is_dropped_even_when_its_slot_is_taken_again() -> None:
    seen: list[Transition] = []
    book = Book(clock=lambda: 5.0, on_transition=seen.append)
    first = _pairs(1)
    (change,), removed = book.set_targets(first)
    slot, gen, _, _ = change
    other = {(0, WEB, DestKey(AF_INET, "192.0.2.99", 80)): next(iter(first.values()))}
    (again,), removed = book.set_targets(other)  # the first dest left, another took its slot
    assert removed == [slot] and again[0] == slot and again[1] != gen
    book.record([(slot, gen, BAD), (slot, gen, BAD)])  # the old pair's probes, ending late
    assert [h.state for h in book.health.values()] == [State.UNKNOWN] and book.probes == {}
    book.record([(slot, again[1], OK)])
    assert [(t.dest.address, t.new) for t in seen] == [("192.0.2.99", State.UP)]
    assert book.probes == {"tcp": (1, 0, 0.001)}


def test_unchanged_pairs_are_not_sent_again_and_a_weight_change_is() -> None:
    book = Book()
    pairs = _pairs(3)
    assert len(book.set_targets(pairs)[0]) == 3
    version = book.version
    assert book.set_targets(dict(pairs)) == ([], []) and book.version == version  # no new view either
    key = next(iter(pairs))
    spec, target = pairs[key]
    heavier = dataclasses.replace(target, weight=5)
    (change,), removed = book.set_targets(pairs | {key: (spec, heavier)})
    assert change[3] == heavier and removed == []


def test_a_view_makes_rows_when_read_and_counts_states_without_them() -> None:
    book = Book(clock=lambda: 7.0)
    two = CheckSpec("http", None, 2, interval=0.05, jitter=0.0)
    pairs = _pairs(3)
    web2 = DestKey(AF_INET, "192.0.2.2", 80)
    pairs[(1, WEB, web2)] = (two, Target(WEB, web2, FwdMethod.ROUTE, 1, 80))  # a second check of .2
    changes, _ = book.set_targets(pairs)
    slots = {(c[2].type, c[3].address): c[:2] for c in changes}
    book.record([(*slots["tcp", "192.0.2.1"], OK), (*slots["tcp", "192.0.2.2"], OK)])
    book.record([(*slots["http", "192.0.2.2"], BAD)] * 3)
    view = HealthView(book.table())
    book.record([(*slots["tcp", "192.0.2.3"], OK)])  # after the view was taken: not in it
    assert view._rows == {}  # nothing made yet
    states = {k[1].address: v for k, v in view.states()}
    assert states == {"192.0.2.1": State.UP, "192.0.2.2": State.DOWN, "192.0.2.3": State.UNKNOWN}
    assert states == {k[1].address: view[k].state for k in view}
    assert view[(WEB, web2)].reason == "connection refused" and len(view[(WEB, web2)].checks) == 2


def test_the_runner_works_out_targets_only_when_the_dests_change(monkeypatch: pytest.MonkeyPatch) -> None:
    worked: list[int] = []

    def counted(config: HealthConfig, snap: Snapshot) -> tuple[Pairs, list[Skipped]]:
        worked.append(len(snap.services))
        return targets(config, snap)

    monkeypatch.setattr("lvstop.health.runner.targets", counted)
    sim = SimProber()
    runner = HealthRunner(parse("checks:\n  - {service: '*', type: tcp}\n"), start=sim.start)
    a = snapshot(Service(WEB, "wlc", dests=(dest("192.0.2.11", 80),)))
    runner.update(a)  # before start(): taken when it starts
    runner.start()
    try:
        for snap in (
            a,
            snapshot(*a.services),
            snapshot(Service(WEB, "wlc", dests=(dest("192.0.2.11", 80, 3),))),
        ):
            runner.update(snap)
            deadline = time.monotonic() + 5
            while runner._latest is not None and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.05)
    finally:
        runner.stop()
    assert worked == [1, 1]  # the first snapshot, then the weight change; not the same dests again


def test_demo_results_follow_the_story() -> None:
    now = [FLAP_PERIOD * 1000 + FLAP_DOWN + 1]
    prober = SimProber(lambda: now[0])
    spec = CheckSpec("tcp", None, 1)
    api = ServiceKey.tcp("203.0.113.11", 8080)
    dead = asyncio.run(
        prober(spec, Target(api, DestKey(AF_INET, "192.0.2.24", 8080), FwdMethod.ROUTE, 2, 8080))
    )
    flap = Target(WEB, DestKey(AF_INET, "192.0.2.13", 8080), FwdMethod.MASQ, 100, 8080)
    fine = asyncio.run(prober(spec, flap))
    now[0] = FLAP_PERIOD * 1000 + 1
    flapped = asyncio.run(prober(spec, flap))
    assert not dead.ok and dead.reason == "timed out after 2 s"
    assert fine.ok and 0 < fine.latency < 0.003
    assert not flapped.ok


def test_runner_thread_probes_loopback_listeners_and_shows_a_view() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    cfg = parse("checks:\n  - {service: '*', type: tcp, interval: 100ms, jitter: 0, fall: 1}\n")
    snap = snapshot(Service(WEB, "wlc", dests=(dest("127.0.0.1", port), dest("127.0.0.1", closed_port))))
    seen: list[Transition] = []
    runner = HealthRunner(cfg, on_transition=seen.append)
    runner.start()
    try:
        runner.update(snap)
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        view = runner.view()
        assert runner.view() is view  # no new result, no rebuild... unless one just arrived
    finally:
        runner.stop()
        listener.close()
    up = view[(WEB, DestKey(AF_INET, "127.0.0.1", port))]
    down = view[(WEB, DestKey(AF_INET, "127.0.0.1", closed_port))]
    assert up.state is State.UP and up.latency is not None and up.reason == "connected"
    assert down.state is State.DOWN and down.reason == "connection refused"
    assert threading.active_count() >= 1


# --- `lvstop health` ---------------------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdin=io.StringIO(), stdout=out, stderr=err, clock=lambda: 1_700_000_001.0)
    return main(list(argv), env), out.getvalue(), err.getvalue()


def test_health_once_on_the_demo(tmp_path: Path) -> None:
    cfg = tmp_path / "h.yaml"
    cfg.write_text(
        "checks:\n  - service: 'TCP 203.0.113.11:8080'\n    type: tcp\n  - {service: 'FWM 1', type: tcp}\n"
    )
    status, out, err = run_cli("--demo", "health", "--health.config", str(cfg), "--once")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "TCP 203.0.113.11:8080"
    assert lines[1].startswith("  192.0.2.21:8080  tcp  up  ") and lines[1].endswith("  connected")
    assert lines[4] == "  192.0.2.24:8080  tcp  down  2.00 s  timed out after 2 s"
    assert lines[5] == "FWM 1"
    assert lines[6] == "  192.0.2.81:0  tcp  unknown  -  the dest has port 0 (fwmark): set port:"


def test_health_config_errors_exit_2_in_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "h.yaml"
    cfg.write_text("checks:\n  - service: '*'\n    type: tcp\n    intervall: 2s\n")
    status, out, err = run_cli("--demo", "health", "--health.config", str(cfg), "--once")
    assert status == 2 and out == ""
    assert err == f"lvstop: error: health config {cfg}:4: key 'intervall': unknown key for a tcp check " + (
        "(known: service, dest, type, name, interval, timeout, fall, rise, jitter, port, source, act, "
        "sorry_server, slow_start) "
        "(see lvstop --help)\n"
    )
    assert run_cli("--demo", "health", "--once")[0] == 2  # --health.config is required


def test_health_watch_prints_transitions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    cfg = tmp_path / "h.yaml"
    cfg.write_text("checks:\n  - {service: '*', type: tcp, interval: 50ms, jitter: 0}\n")
    snap = snapshot(Service(WEB, "wlc", dests=(dest("127.0.0.1", port),)))

    class Fixed:
        name = "netlink"

        def read(self) -> Snapshot:
            return snap

        def close(self) -> None:
            pass

    monkeypatch.setattr("lvstop.cli._open", lambda args, env: Fixed())
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdin=io.StringIO(), stdout=out, stderr=err)
    try:
        status = main(["health", "--health.config", str(cfg), "--count", "20", "--interval", "0.2"], env)
    finally:
        listener.close()
    assert status == 0, err.getvalue()
    assert out.getvalue().endswith(f" TCP 203.0.113.10:80 127.0.0.1:{port} tcp unknown -> up: connected\n")


def test_list_json_carries_a_health_object_per_checked_dest(tmp_path: Path) -> None:
    cfg = tmp_path / "h.yaml"
    cfg.write_text("checks:\n  - {service: 'TCP 203.0.113.11:8080', type: tcp}\n")
    status, out, err = run_cli("--demo", "list", "--json", "--health.config", str(cfg))
    assert status == 0, err
    doc = json.loads(out)
    health = {(s["key"]["port"], d["address"]): d["health"] for s in doc["services"] for d in s["dests"]}
    assert health[(80, "192.0.2.11")] is None  # no check matches the web service
    up, down = health[(8080, "192.0.2.21")], health[(8080, "192.0.2.24")]
    assert (up["state"], up["reason"], up["checks"][0]["check"], up["checks"][0]["ok"]) == (
        "up",
        "connected",
        "tcp",
        True,
    )
    assert (down["state"], down["reason"], down["latency"]) == ("down", "timed out after 2 s", 2.0)
    assert down["since"] == 1_700_000_001.0
    plain = run_cli("--demo", "list", "--json")[1]
    assert "health" not in plain
    assert run_cli("--demo", "list", "--health.config", str(cfg))[0] == 2  # --json only


def test_health_config_is_read_before_the_source(tmp_path: Path) -> None:
    status, _, err = run_cli("--source", "netlink", "health", "--health.config", str(tmp_path / "none.yaml"))
    assert status == 2 and "cannot read" in err


def test_a_config_matching_nothing_warns() -> None:
    cfg = HealthConfig("x", ())
    assert targets(cfg, snapshot()) == ({}, [])


# --- --netns: the probes run in that namespace --------------------------------------------------

NETNS_SCRIPT = r"""
import subprocess, sys, time
from pyroute2 import IPRoute
from lvstop.health.config import parse
from lvstop.health.runner import HealthRunner
from lvstop.model import AF_INET, Dest, FwdMethod, Service, ServiceKey, Snapshot

# another namespace, with loopback up and a listener; this one's loopback stays down
server = subprocess.Popen(
    ["unshare", "--net", sys.executable, "-c",
     "import socket, sys\nfrom pyroute2 import IPRoute\nIPRoute().link('set', index=1, state='up')\n"
     "s = socket.create_server(('127.0.0.1', 0))\nprint(s.getsockname()[1], flush=True)\nsys.stdin.read()"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
)
port = int(server.stdout.readline())
key = ServiceKey.tcp("203.0.113.10", 80)
snap = Snapshot("netlink", "lab", 0.0, 0.0, services=(
    Service(key, "wlc", dests=(Dest(AF_INET, "127.0.0.1", port, FwdMethod.ROUTE, 1),)),))
cfg = parse("checks:\n  - {service: '*', type: tcp, interval: 100ms, jitter: 0, fall: 1}\n")
for netns in (f"/proc/{server.pid}/ns/net", None):
    runner = HealthRunner(cfg, netns=netns)
    runner.start()
    runner.update(snap)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and runner.results < 2:  # the targets, then a first result
        time.sleep(0.05)
    runner.stop()
    (h,) = runner.view().values()
    print(netns is not None, h.state.value, h.reason)
server.stdin.close()
server.wait()
"""


def test_probes_run_in_the_namespace_given() -> None:
    """In a user namespace of its own (no root needed): a listener only in another network namespace
    is up when probed from there and cannot be reached from here."""
    try:
        made = subprocess.run(
            ["unshare", "--user", "--map-root-user", "--net", "true"], capture_output=True, text=True
        )
    except FileNotFoundError:
        pytest.skip("no unshare(1) (util-linux) to make namespaces with")
    if made.returncode != 0:
        pytest.skip(f"cannot make a user and network namespace here: {made.stderr.strip()}")
    out = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--net", sys.executable, "-c", NETNS_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    there, here = out.stdout.splitlines()
    assert there == "True up connected"
    assert here.startswith("False down ") and "unreachable" in here


# --- the probes in a process of their own -------------------------------------------------------


def wait_for(condition: Callable[[], bool], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def children() -> set[int]:
    """This process's children now (any thread's)."""
    found: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            found.update(int(p) for p in (task / "children").read_text().split())
    return found


def gone(pid: int) -> bool:
    """Ended (a zombie nobody reaped yet counts: it runs no more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


FAST_TCP = "checks:\n  - {service: '*', type: tcp, interval: 100ms, jitter: 0, fall: 1}\n"


def test_the_probes_and_exec_checks_run_in_a_child_that_ends_with_stop() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    cfg = parse(
        "checks:\n  - {service: '*', type: tcp, interval: 100ms, jitter: 0}\n"
        "  - {service: '*', type: exec, command: [sh, -c, 'echo $PPID'], interval: 100ms, jitter: 0}\n"
    )
    before = children()
    runner = HealthRunner(cfg)
    runner.update(snapshot(Service(WEB, "wlc", dests=(dest("127.0.0.1", port),))))  # before start()
    runner.start()
    try:
        assert runner._child is not None
        pid = runner._child.proc.pid
        assert children() - before == {pid}
        assert wait_for(lambda: [h.state for h in runner.view().values()] == [State.UP])
        (h,) = runner.view().values()
    finally:
        runner.stop()
        listener.close()
    assert sorted(c.last.reason for c in h.checks if c.last is not None) == ["connected", f"exit 0: {pid}"]
    assert gone(pid) and children() - before == set()


def test_a_child_that_dies_is_reported_its_checks_unknown_and_it_is_started_again() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[Transition] = []
    said: list[tuple[str, bool, list[State]]] = []
    runner = HealthRunner(
        parse(FAST_TCP),
        on_transition=seen.append,
        on_trouble=lambda line, up: said.append((line, up, [h.state for h in runner.view().values()])),
    )
    runner.start()
    try:
        runner.update(snapshot(Service(WEB, "wlc", dests=(dest("127.0.0.1", port),))))
        assert wait_for(lambda: [h.state for h in runner.view().values()] == [State.UP])
        assert runner._child is not None
        first = runner._child.proc.pid
        os.kill(first, signal.SIGKILL)
        assert wait_for(lambda: len(said) == 2)
        new = runner._child
        assert new is not None and new.proc.pid != first
        key = (WEB, DestKey(AF_INET, "127.0.0.1", port))
        assert wait_for(lambda: runner.view()[key].reason == "connected")
        after = runner.view()[key].state
    finally:
        runner.stop()
        listener.close()
    (ended, up_after_end, states), (started, up_after_start, _) = said
    assert (up_after_end, up_after_start) == (False, True)
    assert "killed by SIGKILL" in ended and "unknown" in ended and states == [State.UNKNOWN]
    assert started == "health checks: their process started again"
    assert after is State.UP and gone(first) and gone(new.proc.pid)
    # up -> unknown is the one report above, not a transition per dest; then unknown -> up again
    assert [(t.old, t.new) for t in seen] == [(State.UNKNOWN, State.UP)] * 2


def test_a_namespace_that_cannot_be_entered_fails_at_start_and_leaves_no_child() -> None:
    before = children()
    runner = HealthRunner(parse(FAST_TCP), netns="/nonexistent/netns")
    with pytest.raises(SourceError, match="/nonexistent/netns"):
        runner.start()
    assert children() - before == set()


def test_the_demo_starts_no_process() -> None:
    before = children()
    runner = HealthRunner(parse(FAST_TCP), start=SimProber().start)
    runner.start()
    try:
        runner.update(snapshot(Service(WEB, "wlc", dests=(dest("192.0.2.11", 80),))))
        assert wait_for(lambda: [h.state for h in runner.view().values()] == [State.UP])
        assert runner._child is None and children() - before == set()
    finally:
        runner.stop()


ORPHAN_SCRIPT = r"""
import os, signal, sys, time
from lvstop.health.config import parse
from lvstop.health.runner import HealthRunner
runner = HealthRunner(parse("checks:\n  - {service: '*', type: tcp}\n"))
runner.start()
print(runner._child.proc.pid, flush=True)
sys.stdin.readline()
os.kill(os.getpid(), getattr(signal, sys.argv[1]))
time.sleep(30)
"""


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_the_child_ends_when_its_parent_is_killed(sig: str) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT, sig], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None and parent.stdin is not None
        child = int(parent.stdout.readline())
        assert not gone(child)
        parent.stdin.write("\n")
        parent.stdin.flush()
        assert parent.wait(30) == -getattr(signal, sig)
        assert wait_for(lambda: gone(child))
    finally:
        parent.kill()
        parent.wait()
