"""Issue 10, acting on health: lvstop-exporter --health.act against real servers in the lab.

One service of the master director, 203.0.113.41:8091, with rs1 (weight 3) and rs2 (weight 4) serving
and rs3 as its sorry server (weight 0); each runs an HTTP server that answers with its name. The
exporter (in this process, on the master's IPVS through --netns, probes from inside that namespace)
checks them over HTTP every second, fall 3, rise 2, slow start 10 s. Then:

- rs2 stops serving: it is down after fall x interval, drained (weight 0, actor health, audit line)
  and rs1 takes every request; it serves again: its weight comes back through a ramp (2, then 4);
- an operator drains rs2, rs2 fails and recovers: it stays drained until the operator restores it;
- rs1 and rs2 both stop: both drained, rs3 raised and answering everything; both back: restored and
  rs3 lowered to 0 again;
- `ipvsadm -S` differs from before only in weights while drained, and not at all at the end.

Timeouts are generous and every wait is for a condition: under TCG a probe or a poll takes seconds.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lvstop.events import HEALTH_ACT
from lvstop.exporter.main import Running, build_parser, start
from lvstop.health.state import State
from lvstop.model import AF_INET, DestKey, ServiceKey
from lvstop.sources.factory import open_source

from .lab import MASTER, RS4, SERVERS, Lab

pytestmark = pytest.mark.kernel

VIP, PORT = "203.0.113.41", 8091
SERVICE = ServiceKey.tcp(VIP, PORT)
RS1, RS2, RS3 = (RS4[ns] for ns in SERVERS)
D1, D2, D3 = (DestKey(AF_INET, a, PORT) for a in (RS1, RS2, RS3))
WEIGHTS = {RS1: 3, RS2: 4, RS3: 0}
INTERVAL, FALL = 1.0, 3
CONFIG = f"""\
checks:
  - service: "TCP {VIP}:{PORT}"
    type: http
    path: /
    interval: {INTERVAL:g}s
    timeout: 2s
    fall: {FALL}
    rise: 2
    sorry_server: {RS3}:{PORT}
    slow_start: 10s
"""
WAIT = 180.0  # seconds for any one condition: probes, polls and rounds are slow under TCG


class Servers:
    """An HTTP server per real server namespace on PORT, answering GET / with the namespace's name."""

    def __init__(self, lab: Lab, root: Path) -> None:
        self.lab = lab
        self.root = root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, ns: str) -> None:
        d = self.root / ns
        d.mkdir(exist_ok=True)
        (d / "index.html").write_text(ns.removeprefix("lvt-") + "\n")
        argv = ["ip", "netns", "exec", ns, "timeout", "900", sys.executable, "-m", "http.server", str(PORT)]
        argv += ["--bind", RS4[ns], "--directory", str(d)]
        self.procs[ns] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = f"until (exec 3<>/dev/tcp/{RS4[ns]}/{PORT}) 2>/dev/null; do sleep 0.3; done"
        self.lab.in_ns(MASTER, ["timeout", str(int(WAIT)), "bash", "-c", probe], timeout=WAIT + 30)

    def stop(self, ns: str) -> None:
        p = self.procs.pop(ns)
        p.terminate()
        p.wait(timeout=60)

    def close(self) -> None:
        for ns in list(self.procs):
            self.stop(ns)


def _weights(lab: Lab) -> dict[str, int]:
    out = lab.in_ns(MASTER, ["ipvsadm", "-Ln", "-t", f"{VIP}:{PORT}"]).stdout
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("->")]
    return {r[1].rsplit(":", 1)[0]: int(r[3]) for r in rows if r[1][0].isdigit()}


def _without_weights(saved: str) -> str:
    return re.sub(r" -w \d+", "", saved)


def _wait(what: str, cond: Callable[[], object], seconds: float = WAIT) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {seconds:g} s waiting for {what}"
        time.sleep(0.3)


def _answers(lab: Lab, count: int = 8) -> dict[str, int]:
    plan = [{"name": "h", "kind": "http", "host": VIP, "port": PORT, "count": count}]
    return lab.burst(plan)["h"]


def _state(running: Running, d: DestKey) -> State | None:
    assert running.health is not None
    h = running.health.view().get((SERVICE, d))
    return h.state if h is not None else None


def _acted(running: Running) -> list[tuple[str | None, str | None, str]]:
    events = running.exporter.events.recent()
    return [(e.action, e.dest.address if e.dest else None, e.message) for e in events if e.kind == HEALTH_ACT]


@pytest.fixture(scope="module")
def director(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, Servers, Path]]:
    tmp = tmp_path_factory.mktemp("k9-health")
    lab.in_ns(MASTER, ["ip", "addr", "add", f"{VIP}/32", "dev", "vip0"])
    rules = [
        f"-A -t {VIP}:{PORT} -s wrr",
        *(f"-a -t {VIP}:{PORT} -r {a}:{PORT} -m -w {w}" for a, w in WEIGHTS.items()),
    ]
    lab.in_ns(MASTER, ["ipvsadm", "-R"], input="\n".join(rules) + "\n")
    servers = Servers(lab, tmp)
    running: Running | None = None
    try:
        for ns in SERVERS:
            servers.start(ns)
        (tmp / "health.yml").write_text(CONFIG)
        args = build_parser().parse_args(
            ["--source", "netlink", "--netns", MASTER, "--web.listen-address", "127.0.0.1:0",
             "--interval", "1", "--no-collector.conntable", "--drain-state", str(tmp / "drains.json"),
             "--audit-log", str(tmp / "audit.jsonl"), "--health.config", str(tmp / "health.yml"),
             "--health.act"]
        )  # fmt: skip
        running = start(args, open_source("netlink", netns=MASTER, warn=lambda m: None))
        yield running, servers, tmp
    finally:
        if running is not None:
            running.stop()
        servers.close()
        lab.in_ns(MASTER, ["ipvsadm", "-D", "-t", f"{VIP}:{PORT}"], check=False)
        lab.in_ns(MASTER, ["ip", "addr", "del", f"{VIP}/32", "dev", "vip0"], check=False)


def _audit(tmp: Path) -> list[dict[str, object]]:
    path = tmp / "audit.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_a_server_that_stops_is_drained_and_comes_back_through_a_ramp(
    lab: Lab, director: tuple[Running, Servers, Path]
) -> None:
    running, servers, tmp = director
    _wait("rs1 and rs2 up", lambda: _state(running, D1) is State.UP and _state(running, D2) is State.UP)
    assert _weights(lab) == WEIGHTS
    saved = lab.ipvsadm("-S", "-n")
    assert sorted(_answers(lab)) == ["rs1", "rs2"]

    stopped = time.time()
    servers.stop(SERVERS[1])
    _wait("rs2 drained", lambda: _weights(lab)[RS2] == 0)
    assert running.health is not None
    down = running.health.view()[(SERVICE, D2)]
    assert down.state is State.DOWN and down.checks[0].failures >= FALL
    assert down.since is not None and down.since - stopped >= (FALL - 1) * INTERVAL * 0.9  # fall x interval
    assert _weights(lab) == {RS1: 3, RS2: 0, RS3: 0}
    assert _answers(lab) == {"rs1": 8}  # the others keep the traffic
    now = lab.ipvsadm("-S", "-n")
    assert now != saved and _without_weights(now) == _without_weights(saved)  # only a weight changed
    (drain,) = [a for a in _audit(tmp) if a["action"] == "drain"]
    assert (drain["actor"], drain["outcome"], drain["old"], drain["verified"]) == ("health", "applied", 4, 0)
    control = running.exporter.control
    assert control is not None
    rec = control.drains()[(SERVICE, D2)]
    assert (rec.cause, rec.previous) == ("health", 4)

    servers.start(SERVERS[1])
    seen: list[int] = []

    def restored() -> bool:
        w = _weights(lab)[RS2]
        if not seen or seen[-1] != w:
            seen.append(w)
        return w == 4

    _wait("rs2 restored", restored)
    assert seen == [0, 2, 4], seen  # slow start: 10 s in two steps
    steps = [a for a in _audit(tmp) if a["action"] == "ramp_step"]
    assert [(a["actor"], a["requested"], a["outcome"]) for a in steps] == [
        ("health", 2, "applied"),
        ("health", 4, "applied"),
    ]
    assert lab.ipvsadm("-S", "-n") == saved
    assert control.drains() == {}
    assert sorted(_answers(lab)) == ["rs1", "rs2"]


def test_an_operator_drain_survives_a_health_flap(lab: Lab, director: tuple[Running, Servers, Path]) -> None:
    running, servers, _ = director
    control = running.exporter.control
    assert control is not None
    _wait("rs2 up", lambda: _state(running, D2) is State.UP and _weights(lab) == WEIGHTS)
    control.drain(SERVICE, D2, actor="kernel-tier", reason="operator maintenance")
    servers.stop(SERVERS[1])
    _wait("rs2 down", lambda: _state(running, D2) is State.DOWN)
    servers.start(SERVERS[1])
    _wait("rs2 up again", lambda: _state(running, D2) is State.UP)
    _wait(
        "health to say it leaves rs2 drained",
        lambda: any(a == "keep" and d == RS2 for a, d, _ in _acted(running)),
    )
    time.sleep(3 * INTERVAL)  # rounds after it: still drained
    assert _weights(lab)[RS2] == 0
    rec = control.drains()[(SERVICE, D2)]
    assert (rec.cause, rec.actor) == ("operator", "kernel-tier")
    control.restore(SERVICE, D2, actor="kernel-tier")
    assert _weights(lab) == WEIGHTS


def test_all_down_raises_the_sorry_server_and_lowers_it_after(
    lab: Lab, director: tuple[Running, Servers, Path]
) -> None:
    running, servers, _ = director
    _wait("all up", lambda: _state(running, D1) is State.UP and _state(running, D2) is State.UP)
    saved = lab.ipvsadm("-S", "-n")
    servers.stop(SERVERS[0])
    servers.stop(SERVERS[1])
    _wait("rs1 and rs2 drained, rs3 raised", lambda: _weights(lab) == {RS1: 0, RS2: 0, RS3: 1})
    assert _answers(lab) == {"rs3": 8}
    now = lab.ipvsadm("-S", "-n")
    assert _without_weights(now) == _without_weights(saved)
    raised = [m for a, d, m in _acted(running) if a == "raise_sorry" and d == RS3]
    assert len(raised) == 1 and "every other dest" in raised[0]

    servers.start(SERVERS[0])
    servers.start(SERVERS[1])
    _wait("rs1 and rs2 restored, rs3 lowered", lambda: _weights(lab) == WEIGHTS)
    assert any(a == "lower_sorry" for a, _, _ in _acted(running))
    assert lab.ipvsadm("-S", "-n") == saved
    assert sorted(_answers(lab)) == ["rs1", "rs2"]
    assert not [m for _, _, m in _acted(running) if "could not" in m]  # no write the guard had to refuse
