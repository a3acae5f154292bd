"""Health checks in the exporter: lvstop_ipvs_backend_health_up and the probe counters, on the demo
director (simulated results, nothing leaves the machine), and the exposition checked by promtool."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from fakes import Replies

from lvstop.exporter.main import USAGE, Running, _backends, build_parser, main, start
from lvstop.exporter.metrics import BackendHealth, Health, Inputs, Options, render_inputs
from lvstop.health.checks import Done, Target
from lvstop.health.config import CheckSpec, parse
from lvstop.health.runner import HealthRunner
from lvstop.health.state import (
    CheckHealth,
    DestHealth,
    ProbeResult,
    State,
    combine,
    health_from_dict,
    health_to_dict,
)
from lvstop.model import AF_INET, Dest, DestKey, FwdMethod, Service, ServiceKey, Snapshot
from lvstop.sources.factory import open_source
from lvstop.sources.remote import RemoteHealth, RemoteSource

PROMTOOL = "/usr/bin/promtool"
WEB = ServiceKey.tcp("203.0.113.10", 80)
MARK = ServiceKey.mark(1)


def page(backends: BackendHealth | None, options: Options | None = None) -> str:
    inp = Inputs(None, Health("demo", True, 1.0, 0.01), options=options or Options(), backends=backends)
    return b"".join(render_inputs(inp).identity_chunks()).decode()


def test_health_up_is_absent_while_unknown_and_for_unchecked_dests() -> None:
    states = {
        (WEB, DestKey(AF_INET, "192.0.2.11", 8080)): "up",
        (WEB, DestKey(AF_INET, "192.0.2.12", 8080)): "down",
        (WEB, DestKey(AF_INET, "192.0.2.13", 8080)): "unknown",
        (MARK, DestKey(AF_INET, "192.0.2.81", 0)): "up",
    }
    text = page(BackendHealth(states, {"tcp": (40, 3, 0.25), "http": (2, 0, 0.01)}))
    up = [line for line in text.splitlines() if line.startswith("lvstop_ipvs_backend_health_up{")]
    assert up == [  # in the checks' order (the snapshot's), not sorted: no sort of 100k keys per scrape
        'lvstop_ipvs_backend_health_up{family="inet",local_address="203.0.113.10",local_mark="",local_port="80",'
        'proto="TCP",remote_address="192.0.2.11",remote_port="8080"} 1',
        'lvstop_ipvs_backend_health_up{family="inet",local_address="203.0.113.10",local_mark="",local_port="80",'
        'proto="TCP",remote_address="192.0.2.12",remote_port="8080"} 0',
        'lvstop_ipvs_backend_health_up{family="inet",local_address="",local_mark="1",local_port="0",'
        'proto="FWM",remote_address="192.0.2.81",remote_port="0"} 1',
    ]
    assert 'lvstop_health_probes_total{check="tcp"} 40' in text
    assert 'lvstop_health_probe_failures_total{check="tcp"} 3' in text
    assert 'lvstop_health_probe_duration_seconds_total{check="http"} 0.01' in text
    assert "lvstop_ipvs_backend_health_up" not in page(None)
    res = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_dests_sharing_the_kept_labels_are_down_when_one_is() -> None:
    states = {
        (WEB, DestKey(AF_INET, "192.0.2.11", 8080)): "up",
        (WEB, DestKey(AF_INET, "192.0.2.12", 8080)): "down",
    }
    text = page(BackendHealth(states, {}), Options(dest_labels=("local_address", "local_port")))
    up = [line for line in text.splitlines() if line.startswith("lvstop_ipvs_backend_health_up{")]
    assert up == ['lvstop_ipvs_backend_health_up{local_address="203.0.113.10",local_port="80"} 0']
    assert "lvstop_ipvs_backend_health_up" not in page(BackendHealth(states, {}), Options(dest_metrics=False))


def test_a_scrape_reads_each_dests_state_without_making_its_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """A row per dest per scrape cost 0.4-1.1 s at 100k dests: only a dest with several checks needs one
    (its checks combined); a dest with one check is read from that check."""
    cfg = parse(
        "checks:\n  - {service: '*', type: tcp, interval: 100ms, fall: 1}\n"
        "  - {service: '*', dest: 192.0.2.12, type: http, interval: 100ms, fall: 1}\n"
    )
    answers = {
        ("tcp", "192.0.2.11"): ProbeResult(True, 0.001, "connected"),
        ("tcp", "192.0.2.12"): ProbeResult(True, 0.001, "connected"),
        ("http", "192.0.2.12"): ProbeResult(False, 0.001, "status 503"),
    }  # 192.0.2.13 never answers: unknown

    def start(spec: CheckSpec, target: Target, done: Done) -> None:
        if (answer := answers.get((spec.type, target.address))) is not None:
            done(answer)

    dests = tuple(Dest(AF_INET, f"192.0.2.{i}", 8080, FwdMethod.MASQ, 1) for i in (11, 12, 13))
    runner = HealthRunner(cfg, start=start)
    runner.start()
    try:
        runner.update(Snapshot("demo", "lab", 0.0, 0.0, services=(Service(WEB, "wlc", dests=dests),)))
        deadline = time.monotonic() + 10
        while sum(h.last is not None for _, h in runner.checks()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        runner.stop()
    made: list[DestHealth] = []

    def counted(checks: list[CheckHealth]) -> DestHealth:
        made.append(combine(checks))
        return made[-1]

    monkeypatch.setattr("lvstop.health.runner.combine", counted)
    got = _backends(runner)
    assert dict(got.states) == {
        (WEB, DestKey(AF_INET, "192.0.2.11", 8080)): "up",
        (WEB, DestKey(AF_INET, "192.0.2.12", 8080)): "down",
        (WEB, DestKey(AF_INET, "192.0.2.13", 8080)): "unknown",
    }
    assert [h.state for h in made] == ["down"]  # the dest with two checks; was a row for each of the 3
    assert got.probes["tcp"][0] >= 2 and got.probes["http"][1] >= 1


def demo_with_checks(tmp_path: Path) -> Running:
    """An exporter on the demo, a tcp check of the API service's dests every 100 ms (fall 1)."""
    cfg = tmp_path / "h.yaml"
    cfg.write_text(
        "checks:\n  - {service: 'TCP 203.0.113.11:8080', type: tcp, interval: 100ms, jitter: 0, fall: 1}\n"
    )
    args = build_parser().parse_args(
        ["--source", "demo", "--web.listen-address", "127.0.0.1:0", "--interval", "0.3",
         "--drain-state", str(tmp_path / "d.json"), "--health.config", str(cfg)]
    )  # fmt: skip
    running = start(args, open_source("demo", warn=lambda _: None))
    return running


def test_the_exporter_on_the_demo_shows_health(tmp_path: Path) -> None:
    running = demo_with_checks(tmp_path)
    try:
        url = running.servers[0].url + "/metrics"
        deadline = time.monotonic() + 20
        while True:
            with urllib.request.urlopen(url, timeout=5) as r:
                text = r.read().decode()
            lines = [line for line in text.splitlines() if line.startswith("lvstop_ipvs_backend_health_up{")]
            if len(lines) == 4 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        running.stop()
    by_dest = {line.split('remote_address="')[1].split('"')[0]: line[-1] for line in lines}
    assert by_dest == {"192.0.2.21": "1", "192.0.2.22": "1", "192.0.2.23": "1", "192.0.2.24": "0"}
    probes = next(
        line for line in text.splitlines() if line.startswith('lvstop_health_probes_total{check="tcp"}')
    )
    assert int(probes.split()[-1]) >= 4


def test_a_bad_health_config_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "h.yaml"
    cfg.write_text("checks:\n  - {service: '*', type: smtp}\n")
    argv = [
        "--source",
        "demo",
        "--web.listen-address",
        "127.0.0.1:0",
        "--drain-state",
        str(tmp_path / "d.json"),
    ]
    assert main([*argv, "--health.config", str(cfg)]) == USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"lvstop-exporter: health config {cfg}:2: key 'type': unknown type 'smtp' " + (
        "(one of tcp, http, https, dns, exec, agent)"
    )


def test_the_health_api_gives_what_list_json_gives_and_a_remote_reads_it_back(tmp_path: Path) -> None:
    running = demo_with_checks(tmp_path)
    try:
        url = running.servers[0].url
        remote = RemoteHealth(RemoteSource(url))
        deadline = time.monotonic() + 20
        while True:
            remote.update()
            view = remote.view()
            assert view is not None, remote.error
            if len(view) == 4 and all(h.state is not State.UNKNOWN for h in view.values()):
                break
            assert time.monotonic() < deadline, view
            time.sleep(0.1)
        with urllib.request.urlopen(url + "/api/v1/health", timeout=5) as r:
            doc = json.loads(r.read())
        older = RemoteHealth(RemoteSource(url + "/older"))  # no such route: as an exporter before it
        older.update()
    finally:
        running.stop()
    api = ServiceKey.tcp("203.0.113.11", 8080)
    states = {(s, d.address): h.state for (s, d), h in view.items()}
    assert states == {
        (api, "192.0.2.21"): State.UP,
        (api, "192.0.2.22"): State.UP,
        (api, "192.0.2.23"): State.UP,
        (api, "192.0.2.24"): State.DOWN,
    }
    assert view[(api, DestKey(AF_INET, "192.0.2.24", 8080))].reason == "timed out after 2 s"
    assert doc["checks"] is True and len(doc["dests"]) == 4
    for e in doc["dests"]:
        assert health_to_dict(health_from_dict(e["health"])) == e["health"]  # nothing lost on the way
    assert older.view() is None and older.error is not None and "404" in older.error


def test_a_bad_health_reply_keeps_the_last_view_and_says_why() -> None:
    good = {
        "checks": True,
        "dests": [
            {
                "service": {"family": "inet", "protocol": "tcp", "address": "203.0.113.11", "port": 8080},
                "dest": {"family": "inet", "address": "192.0.2.24", "port": 8080},
                "health": health_to_dict(combine([CheckHealth("tcp", State.DOWN, 1.0, None, None)])),
            }
        ],
    }
    bad_state = json.loads(json.dumps(good))
    bad_state["dests"][0]["health"]["state"] = "sideways"
    bad_time = json.loads(json.dumps(good))
    bad_time["dests"][0]["health"]["since"] = "yesterday"
    bad_ok = json.loads(json.dumps(good))  # a string is not coerced: bool("false") is True
    bad_ok["dests"][0]["health"]["checks"][0].update(ok="false", latency=0.1, reason="refused")
    replies = Replies(
        "/api/v1/health", good, bad_state, bad_time, bad_ok, {"checks": True}, {"checks": False}
    )
    remote = RemoteHealth(replies)  # type: ignore[arg-type]
    remote.update()
    first = remote.view()
    assert first is not None and remote.error is None
    for why in (
        "dests[0].health.state: expected one of unknown, up, down, got the string 'sideways'",
        "dests[0].health.since: expected a finite number, got the string 'yesterday'",
        "dests[0].health.checks[0].ok: expected true or false, got the string 'false'",
        "dests: missing",
    ):
        remote.update()
        assert remote.view() is first and remote.error is not None and why in remote.error
        assert remote.error.startswith("http://192.0.2.1:9736/api/v1/health: unexpected reply")
    remote.update()
    assert remote.view() is None and remote.error is None  # the exporter's checks were turned off
