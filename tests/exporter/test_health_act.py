"""`lvstop-exporter --health.act` on the demo director (simulated probes: 192.0.2.24 never answers): the
dead dest is drained as actor `health` with an audit line and an event, an operator's drain of it stays,
a service keepalived manages is left alone and said so in /api/v1/status, and bad flags exit 2."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lvstop.events import HEALTH_ACT
from lvstop.exporter.main import USAGE, main
from lvstop.model import AF_INET, DestKey, ServiceKey

from .support import Harness, start_exporter

API = ServiceKey.tcp("203.0.113.11", 8080)
DEAD = DestKey(AF_INET, "192.0.2.24", 8080)
CHECKS = "checks:\n" + (
    "  - {service: 'TCP 203.0.113.11:8080', type: tcp, interval: 100ms, jitter: 0, fall: 1, rise: 1}\n"
)


def _config(tmp_path: Path, text: str = CHECKS) -> str:
    path = tmp_path / "h.yaml"
    path.write_text(text)
    return str(path)


def _wait(what: str, cond: Callable[[], object], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _weight(h: Harness, d: DestKey = DEAD) -> int:
    dest = h.source.get_dest(API, d)
    assert dest is not None
    return dest.weight


def test_a_dead_dest_is_drained_by_health_with_audit_and_event(tmp_path: Path) -> None:
    h = start_exporter(tmp_path, "--health.config", _config(tmp_path), "--health.act", write=False)
    try:
        _wait("the dead dest to be drained", lambda: _weight(h) == 0)
        _wait("the audit line", lambda: any(a["action"] == "drain" for a in h.audit()))
        (line,) = [a for a in h.audit() if a["action"] == "drain"]
        assert (line["actor"], line["source"], line["outcome"], line["old"], line["verified"]) == (
            "health",
            "health",
            "applied",
            2,
            0,
        )
        assert line["reason"] == "health: down (tcp: timed out after 2 s)"
        (drain,) = h.get("/api/v1/drains").json()["drains"]
        assert (drain["cause"], drain["actor"], drain["previous"]) == ("health", "health", 2)
        events = [e for e in h.running.exporter.events.recent() if e.kind == HEALTH_ACT]
        assert [(e.action, e.dest, e.old, e.new) for e in events] == [("drain", DEAD, 2, 0)]
        assert events[0].message.startswith(f"health drained {DEAD} of {API} (weight 2 -> 0): health: down")
        status = h.get("/api/v1/status").json()
        assert status["health_act"] == {"enabled": True, "skipped": []}
        for d in ("192.0.2.21", "192.0.2.22", "192.0.2.23"):  # the live ones keep their weight
            assert _weight(h, DestKey(AF_INET, d, 8080)) > 0
    finally:
        h.running.stop()


def test_acting_is_off_by_default_and_per_check(tmp_path: Path) -> None:
    h = start_exporter(tmp_path, "--health.config", _config(tmp_path), write=False)
    try:
        _wait("the dead dest to be seen down", lambda: h.running.health and h.running.health.view())
        time.sleep(0.5)
        assert _weight(h) == 2 and h.running.actor is None
        assert h.get("/api/v1/status").json()["health_act"] == {"enabled": False, "skipped": []}
    finally:
        h.running.stop()
    one = CHECKS.replace("rise: 1}", "rise: 1, act: true}")
    h = start_exporter(tmp_path, "--health.config", _config(tmp_path, one), write=False)
    try:
        _wait("the dead dest to be drained by its acting check", lambda: _weight(h) == 0)
    finally:
        h.running.stop()


def test_an_operator_drain_is_not_restored_and_a_managed_service_is_skipped(tmp_path: Path) -> None:
    proc = tmp_path / "proc" / "4242"
    (proc / "root" / "etc" / "keepalived").mkdir(parents=True)
    (proc / "comm").write_text("keepalived\n")
    (proc / "cmdline").write_bytes(b"keepalived\0--check\0")
    (proc / "root" / "etc" / "keepalived" / "keepalived.conf").write_text(
        "virtual_server 203.0.113.11 8080 {\n  real_server 192.0.2.24 8080 {\n    weight 2\n  }\n}\n"
    )
    h = start_exporter(tmp_path, "--health.config", _config(tmp_path), "--health.act", write=False)
    try:
        _wait("the skip to be said", lambda: h.get("/api/v1/status").json()["health_act"]["skipped"])
        status = h.get("/api/v1/status").json()
        (skipped,) = status["health_act"]["skipped"]
        assert skipped["text"] == str(API)
        assert skipped["reason"].startswith(
            "keepalived (pid 4242) manages it (virtual_server 203.0.113.11 8080"
        )
        assert f"health does not act on {API}: keepalived (pid 4242) manages it" in " ".join(
            status["warnings"]
        )
        time.sleep(0.5)
        assert _weight(h) == 2
        skips = [e for e in h.running.exporter.events.recent() if e.kind == HEALTH_ACT]
        assert [e.action for e in skips] == ["skip"]  # said once
        assert h.audit() == []
    finally:
        h.running.stop()


def test_bad_acting_flags_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--source", "demo", "--web.listen-address", "127.0.0.1:0", "--drain-state", str(tmp_path / "d")]
    assert main([*base, "--health.act"]) == USAGE
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("--health.act needs --health.config (the checks that decide)")
    )
    cfg = _config(tmp_path, CHECKS.replace("rise: 1}", "rise: 1, act: maybe}"))
    assert main([*base, "--health.config", cfg]) == USAGE
    assert "key 'act': expected true or false, not 'maybe'" in capsys.readouterr().err
