"""The HTTP API against a running exporter on the demo director: every rule of the write path."""

from __future__ import annotations

import dataclasses
import gzip
import http.client
import json
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from lvstop import control
from lvstop.exporter import core
from lvstop.exporter.auth import GUESS_BURST, RateLimiter
from lvstop.exporter.http import MAX_BODY, REFUSED_BURST, REFUSED_RATE
from lvstop.exporter.main import build_parser, start
from lvstop.sources.sim import SimSource

from .support import WEB, Harness, Reply, basic, dest_json, dkey, key_json, listener, start_exporter

DRAIN = {"service": key_json(), "dest": dest_json()}


def weight_of(h: Harness, addr: str = "192.0.2.11") -> int:
    d = h.source.get_dest(WEB, dkey(addr))
    assert d is not None
    return d.weight


# --- reads ---


def test_metrics_identity_and_gzip_are_the_same_page(exporter: Harness) -> None:
    plain = exporter.get("/metrics")
    zipped = exporter.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert plain.status == zipped.status == 200
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert zipped.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert gzip.decompress(zipped.body) == plain.body
    assert b'lvstop_ipvs_backend_weight{family="inet",local_address="203.0.113.10"' in plain.body


def test_the_exporters_own_process_metrics_are_on_the_same_page(exporter: Harness) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    page = exporter.get("/metrics").body.decode()
    families = [f.name for f in text_string_to_metric_families(page)]
    assert len(families) == len(set(families))  # one exposition, no family twice
    for name in (
        "process_start_time_seconds",
        "process_resident_memory_bytes",
        "python_info",
        "python_gc_objects_collected",
    ):
        assert name in families
    assert "lvstop_ipvs_backend_weight" in families
    [start] = [
        s.value
        for f in text_string_to_metric_families(page)
        if f.name == "process_start_time_seconds"
        for s in f.samples
    ]
    assert 0 < time.time() - start < 3600


def test_the_page_is_rendered_once_per_snapshot(exporter: Harness) -> None:
    cache = exporter.running.exporter.metrics_cache
    exporter.running.poller.stop()
    exporter.poll()
    exporter.get("/metrics")
    before = cache.renders
    for _ in range(5):
        exporter.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert cache.renders == before
    exporter.poll()
    exporter.get("/metrics")
    assert cache.renders == before + 1


@pytest.fixture
def ticking(tmp_path: Path) -> Iterator[Harness]:
    """An exporter told a poll period (--interval): it polls on its own, not when asked."""
    h = start_exporter(tmp_path, "--interval", "2")
    yield h
    h.running.stop()


def test_busy_scrapers_get_pages_rendered_after_the_poll_lazy_ones_do_not(ticking: Harness) -> None:
    exporter = ticking
    ex = exporter.running.exporter
    assert not exporter.running.poller.on_demand
    exporter.running.poller.stop()
    for _ in range(3):  # nobody asks: polls render nothing
        exporter.poll()
    assert ex.metrics_cache.renders == 0
    for _ in range(4):  # two scrapes per poll
        exporter.poll()
        exporter.get("/metrics")
        exporter.get("/metrics")
    exporter.poll()  # from now on rendered in the background, before anyone asks
    deadline = time.monotonic() + 10
    while ex._prefetching:
        assert time.monotonic() < deadline, "the background render never finished"
        time.sleep(0.01)
    renders = ex.metrics_cache.renders
    exporter.get("/metrics")
    exporter.get("/metrics")
    assert ex.metrics_cache.renders == renders  # both served from memory


def test_concurrent_scrapes_beyond_the_cap_get_503(tmp_path: Path) -> None:
    h = start_exporter(tmp_path, "--web.max-requests", "1")
    try:
        app = h.running.servers[0].app
        assert app.scrape_slot()  # a scrape in progress
        busy = h.get("/metrics")
        assert busy.status == 503 and "concurrent" in busy.json()["error"]
        assert h.get("/-/healthy").status == 200  # only scrapes are capped
        app.scrape_done()
        assert h.get("/metrics").status == 200
    finally:
        h.running.stop()


def test_snapshot_is_the_codec_json_of_the_latest_poll(exporter: Harness) -> None:
    reply = exporter.get("/api/v1/snapshot")
    doc = reply.json()
    assert reply.status == 200 and doc["schema"] == 1 and doc["source"] == "demo"
    assert doc["seq"] == exporter.running.poller.latest.seq  # type: ignore[union-attr]


def test_health_readiness_status_openapi(exporter: Harness) -> None:
    assert exporter.get("/-/healthy").status == 200
    assert exporter.get("/-/ready").body == b"Ready\n"
    status = exporter.get("/api/v1/status").json()
    assert status["poll"]["success"] is True and status["writes"]["enabled"] is True
    spec = exporter.get("/api/v1/openapi.json").json()
    assert spec["openapi"].startswith("3.0") and "/api/v1/drain" in spec["paths"]
    assert exporter.get("/nope").status == 404
    assert exporter.get("/api/v1/events?limit=0").status == 400
    assert exporter.get("/api/v1/events?limit=%C2%B2").status == 400  # "²" passes str.isdigit()
    assert exporter.get("/api/v1/events?limit=").status == 400  # blank is not "the default"
    assert exporter.get("/api/v1/events?limit=2").status == 200


# --- the write path ---


def test_drain_restore_and_the_audit_trail(exporter: Harness) -> None:
    res = exporter.post("/api/v1/drain", {**DRAIN, "reason": "kernel update"})
    doc = res.json()
    assert res.status == 200 and (doc["outcome"], doc["old"], doc["verified"], doc["previous"]) == (
        "applied",
        100,
        0,
        100,
    )
    assert weight_of(exporter) == 0
    exporter.poll()
    drains = exporter.get("/api/v1/drains").json()["drains"]
    assert [(d["previous"], d["weight"], d["reason"]) for d in drains] == [(100, 0, "kernel update")]
    res = exporter.post("/api/v1/restore", {**DRAIN, "expect": 0})
    assert res.status == 200 and res.json()["verified"] == 100 and weight_of(exporter) == 100
    lines = exporter.audit()
    assert [(a["action"], a["outcome"], a["old"], a["verified"]) for a in lines] == [
        ("drain", "applied", 100, 0),
        ("restore", "applied", 0, 100),
    ]
    assert lines[0]["actor"] == "anonymous" and lines[0]["source"] == "127.0.0.1"


def test_set_weight_changes_only_the_weight_and_is_credited_to_lvstop(exporter: Harness) -> None:
    before = exporter.source.get_dest(WEB, dkey())
    res = exporter.post("/api/v1/weight", {**DRAIN, "weight": 42, "expect": 100})
    assert res.status == 200 and res.json()["verified"] == 42
    after = exporter.source.get_dest(WEB, dkey())
    assert before is not None and after is not None
    assert (after.fwd, after.u_threshold, after.l_threshold, after.tun_type) == (
        before.fwd,
        before.u_threshold,
        before.l_threshold,
        before.tun_type,
    )
    exporter.poll()
    events = exporter.get("/api/v1/events").json()["events"]
    changed = [e for e in events if e["kind"] == "weight_changed"]
    assert changed[-1]["actor"] == "anonymous" and changed[-1]["new"] == 42


def test_a_weight_changed_outside_lvstop_is_flagged(exporter: Harness) -> None:
    d = exporter.source.get_dest(WEB, dkey("192.0.2.12"))
    assert d is not None
    exporter.source.set_dest(WEB, dataclasses.replace(d, weight=3))  # what keepalived would do
    exporter.poll()
    events = exporter.get("/api/v1/events").json()["events"]
    assert any(e["kind"] == "weight_changed" and e["actor"] is None and e["new"] == 3 for e in events)
    page = exporter.get("/metrics").body.decode()
    line = next(
        x for x in page.splitlines() if x.startswith("lvstop_ipvs_backend_external_weight_changes_total{")
    )
    assert 'remote_address="192.0.2.12"' in line and line.endswith(" 1")


@pytest.mark.parametrize(
    "body,status,needle",
    [
        ({**DRAIN, "weight": 65536}, 400, "weight must be"),
        ({**DRAIN, "weight": -1}, 400, "weight must be"),
        ({**DRAIN, "weight": "5"}, 400, "weight must be"),
        ({**DRAIN}, 400, "weight is required"),
        ({**DRAIN, "weight": 1, "colour": "red"}, 400, "unknown field"),
        ({**DRAIN, "weight": 1, "dry_run": "yes"}, 400, "dry_run"),
        (
            {
                "service": {"protocol": "tcp", "address": "203.0.113.99", "port": 80},
                "dest": dest_json(),
                "weight": 1,
            },
            404,
            "nothing was added",
        ),
        ({"service": key_json(), "dest": dest_json("192.0.2.99"), "weight": 1}, 404, "nothing was added"),
        ({**DRAIN, "weight": 1, "expect": 7}, 409, "not 7 as expected"),
        (
            {"service": {"protocol": "tcp", "address": "nope", "port": 80}, "dest": dest_json(), "weight": 1},
            400,
            "not an IP address",
        ),
    ],
)
def test_bad_edits_are_refused_and_audited(
    exporter: Harness, body: dict[str, Any], status: int, needle: str
) -> None:
    res = exporter.post("/api/v1/weight", body)
    assert res.status == status and needle in res.json()["error"]
    assert weight_of(exporter) == 100
    [line] = exporter.audit()
    assert (line["outcome"], line["status"]) == ("rejected", status)
    services = [s for s in exporter.source.read().services if s.key.address == "203.0.113.99"]
    assert services == []  # a 404 never adds anything


def test_last_live_weight_needs_force_reason_and_admin(exporter: Harness) -> None:
    snap = exporter.poll()
    svc = next(s for s in snap.services if s.key.is_fwmark and len(s.dests) >= 1)
    body_base = {"service": {"family": "inet6" if svc.key.family == 10 else "inet", "fwmark": svc.key.fwmark}}
    last: dict[str, Any] = {}
    for d in svc.dests:  # drain all but the last dest, then try the last
        body = {**body_base, "dest": {"address": d.address, "port": d.port}}
        res = exporter.post("/api/v1/drain", body)
        last = body
        if res.status == 409:
            break
        assert res.status == 200, res.json()
    assert res.status == 409 and "last live weight" in res.json()["error"]
    forced = exporter.post("/api/v1/drain", {**last, "force": True, "reason": "maintenance window"})
    assert forced.status == 403 and "admin" in forced.json()["error"]  # anonymous is an operator


def test_dry_run_changes_nothing(exporter: Harness) -> None:
    res = exporter.post("/api/v1/drain", {**DRAIN, "dry_run": True})
    doc = res.json()
    assert res.status == 200 and (doc["outcome"], doc["requested"], doc["verified"]) == ("dry_run", 0, None)
    assert weight_of(exporter) == 100 and exporter.get("/api/v1/drains").json()["drains"] == []
    assert exporter.audit()[0]["outcome"] == "dry_run"


def test_csrf_and_transport_rules(exporter: Harness) -> None:
    attempts = [
        (exporter.request("GET", "/api/v1/weight"), 405),
        (
            exporter.post(
                "/api/v1/weight",
                None,
                raw=b"{}",
                headers={"Content-Type": "text/plain", "X-Lvstop-Request": "1"},
            ),
            415,
        ),
        (
            exporter.post(
                "/api/v1/weight", {**DRAIN, "weight": 1}, headers={"Origin": "https://evil.example"}
            ),
            403,
        ),
        (exporter.post("/api/v1/weight", {**DRAIN, "weight": 1}, headers={"X-Lvstop-Request": ""}), 403),
        (
            exporter.post(
                "/api/v1/weight",
                None,
                raw=b"{",
                headers={"Content-Type": "application/json", "X-Lvstop-Request": "1"},
            ),
            400,
        ),
        (
            exporter.post(
                "/api/v1/weight",
                None,
                raw=b"x" * 70000,
                headers={"Content-Type": "application/json", "X-Lvstop-Request": "1"},
            ),
            413,
        ),
        (exporter.post("/api/v1/drain", DRAIN, write=False), 403),  # the read listener never writes
        (exporter.request("DELETE", "/metrics", write=False), 405),
    ]
    for reply, status in attempts:
        assert reply.status == status, (reply.status, reply.body)
    assert attempts[0][0].headers["allow"] == "POST"
    assert weight_of(exporter) == 100
    lines = exporter.audit()
    assert len(lines) == 7  # every attempt on a write route, none for the read-only page
    assert all(a["outcome"] == "rejected" for a in lines)


def test_allowed_origin_may_write(tmp_path: Path) -> None:
    h = start_exporter(tmp_path, "--write.allowed-origin", "https://ops.example", "--write.rate", "100")
    try:
        ok = h.post("/api/v1/drain", {**DRAIN, "dry_run": True}, headers={"Origin": "https://ops.example"})
        bad = h.post(
            "/api/v1/drain", {**DRAIN, "dry_run": True}, headers={"Origin": "https://ops.example.evil"}
        )
        assert (ok.status, bad.status) == (200, 403)
    finally:
        h.running.stop()


def test_strangers_never_spend_a_verified_users_write_budget(tmp_path: Path) -> None:
    cfg = web_config(tmp_path)
    h = start_exporter(tmp_path, "--web.config.file", str(cfg), "--write.rate", "0.01", "--write.burst", "2")
    try:
        dry = {**DRAIN, "dry_run": True}
        strangers = {h.post("/api/v1/drain", dry).status for _ in range(8)}
        assert strangers <= {401, 429}
        bob = [
            h.post("/api/v1/drain", dry, headers={"Authorization": basic("bob", "bob-pw")}) for _ in range(3)
        ]
        assert [r.status for r in bob] == [200, 200, 429]  # bob's own budget of 2, whatever strangers did
        assert int(bob[2].headers["retry-after"]) >= 1
        carol = h.post("/api/v1/drain", dry, headers={"Authorization": basic("carol", "carol-pw")})
        assert carol.status == 200  # and carol has hers
    finally:
        h.running.stop()


def test_a_flood_of_refused_writes_is_counted_exactly_and_audited_in_bursts(exporter: Harness) -> None:
    now = [0.0]  # the refusals' bucket on a clock of the test's: a loaded machine earns no token back
    exporter.running.app.refused = RateLimiter(REFUSED_RATE, REFUSED_BURST, clock=lambda: now[0])
    n = 60
    statuses = [exporter.get("/api/v1/drain", write=True).status for _ in range(n)]
    first = statuses.index(429)
    assert statuses[:first] == [405] * first and set(statuses[first:]) == {429}
    assert first == REFUSED_BURST
    too_big = exporter.post(
        "/api/v1/drain", None, raw=b"x" * (MAX_BODY + 1), headers={"Content-Type": "application/json"}
    )
    on_reads = exporter.post("/api/v1/drain", DRAIN, write=False)
    assert too_big.status == on_reads.status == 429  # the same network's budget
    lines = exporter.audit()
    assert len(lines) == first and {a["status"] for a in lines} == {405}
    page = exporter.get("/metrics").body.decode()
    assert f'lvstop_weight_edits_total{{outcome="rejected"}} {n + 2}' in page  # every attempt, exactly
    now[0] += 1.1 / REFUSED_RATE  # a token comes back: the next refusal is logged, after the count
    assert exporter.get("/api/v1/drain", write=True).status == 405
    summary, line = exporter.audit()[-2:]
    assert summary["action"] == "flood" and summary["error"].startswith(
        f"{n + 2 - first} refused write attempts"
    )
    assert (line["status"], line["action"]) == (405, "drain")


def test_ramp_steps_to_the_target_and_can_be_cancelled(exporter: Harness) -> None:
    plan = exporter.post(
        "/api/v1/ramps", {**DRAIN, "weight": 40, "duration": 0.3, "steps": 3, "dry_run": True}
    ).json()
    assert plan["outcome"] == "dry_run" and [s["weight"] for s in plan["plan"]] == [80, 60, 40]
    assert weight_of(exporter) == 100
    started = exporter.post("/api/v1/ramps", {**DRAIN, "weight": 40, "duration": 0.3, "steps": 3})
    assert started.status == 202
    ramp_id = started.json()["ramp"]["id"]
    deadline = time.monotonic() + 5
    while exporter.get("/api/v1/ramps").json()["ramps"][0]["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert exporter.get("/api/v1/ramps").json()["ramps"][0]["state"] == "done" and weight_of(exporter) == 40
    steps = [a for a in exporter.audit() if a["action"] == "ramp_step"]
    assert [(a["old"], a["verified"]) for a in steps] == [(100, 80), (80, 60), (60, 40)]
    assert all(a["actor"] == "anonymous" and a["source"] == f"ramp {ramp_id}" for a in steps)

    slow = exporter.post("/api/v1/ramps", {**DRAIN, "weight": 100, "duration": 60, "steps": 6}).json()["ramp"]
    busy = exporter.post("/api/v1/ramps", {**DRAIN, "weight": 1, "duration": 1})
    assert busy.status == 409
    cancel = exporter.post(f"/api/v1/ramps/{slow['id']}/cancel", {})
    assert cancel.status == 200 and cancel.json()["ramp"]["state"] == "cancelled"
    assert weight_of(exporter) == 40  # stopped where it stood
    assert exporter.post("/api/v1/ramps/r999/cancel", {}).status == 404


def test_a_ramp_stops_when_someone_else_touches_the_weight(exporter: Harness) -> None:
    ramp = exporter.post("/api/v1/ramps", {**DRAIN, "weight": 0, "duration": 0.4, "steps": 2}).json()["ramp"]
    exporter.post("/api/v1/weight", {**DRAIN, "weight": 77})
    deadline = time.monotonic() + 5
    while (state := exporter.get("/api/v1/ramps").json()["ramps"][0])["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert state["id"] == ramp["id"] and state["state"] == "failed" and "changed meanwhile" in state["error"]
    assert weight_of(exporter) == 77


def test_a_drain_survives_an_exporter_restart(tmp_path: Path) -> None:
    sim = SimSource(seed=1)
    h = start_exporter(tmp_path, source=sim)
    assert h.post("/api/v1/drain", DRAIN).status == 200
    h.running.stop()
    again = start_exporter(tmp_path, source=sim)
    try:
        drains = again.get("/api/v1/drains").json()["drains"]
        assert [(d["previous"], d["actor"]) for d in drains] == [(100, "anonymous")]
        assert again.post("/api/v1/restore", DRAIN).status == 200 and weight_of(again) == 100
        assert len(again.audit()) == 2  # the same audit file: the drain, then the restore
    finally:
        again.running.stop()


def test_keepalived_is_warned_about(tmp_path: Path) -> None:
    # keepalived runs before the exporter starts: the detection is cached, so no race with a first scan
    (tmp_path / "proc" / "4242").mkdir(parents=True)
    (tmp_path / "proc" / "4242" / "comm").write_text("keepalived\n")
    exporter = start_exporter(tmp_path)
    try:
        res = exporter.post("/api/v1/weight", {**DRAIN, "weight": 5, "dry_run": True}).json()
        assert any("keepalived (pid 4242)" in w for w in res["warnings"])
        status = exporter.get("/api/v1/status").json()
        assert status["weight_managers"] == [{"name": "keepalived", "pid": 4242}]
    finally:
        exporter.running.stop()


def test_weight_managers_are_scanned_once_for_many_pages_and_edits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scans: list[str] = []

    def counting(proc_root: str = "/proc") -> tuple[tuple[str, int], ...]:
        scans.append(proc_root)
        return detect(proc_root)

    detect = control.detect_weight_managers
    monkeypatch.setattr(control, "detect_weight_managers", counting)
    monkeypatch.setattr(core, "detect_weight_managers", counting, raising=False)  # any direct caller
    (tmp_path / "proc" / "4242").mkdir(parents=True)
    (tmp_path / "proc" / "4242" / "comm").write_text("keepalived\n")
    h = start_exporter(tmp_path)
    try:
        for _ in range(3):
            assert h.get("/api/v1/status").json()["weight_managers"] == [{"name": "keepalived", "pid": 4242}]
            assert b"lvstop_weight_managers" in h.get("/metrics").body
            h.poll()
        res = h.post("/api/v1/weight", {**DRAIN, "weight": 5, "dry_run": True}).json()
        assert any("keepalived (pid 4242)" in w for w in res["warnings"])
    finally:
        h.running.stop()
    assert scans == [str(tmp_path / "proc")]


# --- authentication and roles ---


def web_config(tmp_path: Path, tls: tuple[Path, Path] | None = None) -> Path:
    def h(pw: str) -> str:
        return bcrypt.hashpw(pw.encode(), bcrypt.gensalt(4)).decode()

    doc: dict[str, Any] = {
        "basic_auth_users": {"alice": h("alice-pw"), "bob": h("bob-pw"), "carol": h("carol-pw")},
        "roles": {"alice": "reader", "bob": "operator", "carol": "admin"},
    }
    if tls:
        doc["tls_server_config"] = {"cert_file": str(tls[0]), "key_file": str(tls[1])}
    path = tmp_path / "web-config.yml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


@pytest.fixture
def secured(tmp_path: Path) -> Any:
    h = start_exporter(
        tmp_path,
        "--web.config.file",
        str(web_config(tmp_path)),
        "--write.rate",
        "1000",
        "--write.burst",
        "1000",
    )
    yield h
    h.running.stop()


def test_no_or_bad_credentials_are_401_everywhere(secured: Harness) -> None:
    assert secured.get("/metrics").status == 401
    assert secured.get("/metrics", headers={"Authorization": basic("alice", "wrong")}).status == 401
    assert secured.get("/metrics", headers={"Authorization": basic("mallory", "x")}).status == 401
    assert secured.get("/metrics", headers={"Authorization": "Basic !!!"}).status == 401
    assert secured.get("/metrics", headers={"Authorization": basic("alice", "alice-pw")}).status == 200
    res = secured.post("/api/v1/drain", DRAIN)
    assert res.status == 401 and res.headers["www-authenticate"].startswith("Basic")


def test_a_reload_reopens_the_audit_log_and_rereads_the_web_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = web_config(tmp_path)
    h = start_exporter(tmp_path, "--web.config.file", str(cfg))
    try:
        dry = {**DRAIN, "dry_run": True}
        assert h.post("/api/v1/drain", dry, headers={"Authorization": basic("bob", "bob-pw")}).status == 200
        h.audit_path.rename(tmp_path / "audit.jsonl.1")  # logrotate
        doc = json.loads(cfg.read_text())
        del doc["basic_auth_users"]["bob"], doc["roles"]["bob"]
        doc["basic_auth_users"]["dave"] = bcrypt.hashpw(b"dave-pw", bcrypt.gensalt(4)).decode()
        doc["roles"]["dave"] = "operator"
        cfg.write_text(json.dumps(doc))
        with caplog.at_level("INFO", "lvstop.exporter"):
            assert h.running.reload()
        assert "users added: dave" in caplog.text and "users removed: bob" in caplog.text
        assert h.post("/api/v1/drain", dry, headers={"Authorization": basic("bob", "bob-pw")}).status == 401
        assert h.post("/api/v1/drain", dry, headers={"Authorization": basic("dave", "dave-pw")}).status == 200
        assert [a["actor"] for a in h.audit()] == [None, "dave"]  # bob's 401 has no actor
        assert len((tmp_path / "audit.jsonl.1").read_text().splitlines()) == 1
        cfg.write_text("basic_auth_users: [")  # a broken edit keeps the previous config
        caplog.clear()
        assert not h.running.reload()
        assert "not reloaded, keeping the previous config" in caplog.text and "not valid YAML" in caplog.text
        assert h.post("/api/v1/drain", dry, headers={"Authorization": basic("dave", "dave-pw")}).status == 200
    finally:
        h.running.stop()


def test_a_password_too_long_for_bcrypt_is_a_401_and_an_audited_failed_login(secured: Harness) -> None:
    long = {"Authorization": basic("bob", "bob-pw" + "x" * 80)}
    assert secured.get("/metrics", headers=long).status == 401
    assert secured.post("/api/v1/drain", DRAIN, headers=long).status == 401
    [line] = secured.audit()
    assert (line["action"], line["outcome"], line["status"]) == ("drain", "rejected", 401)


def test_an_unexpected_error_in_a_write_attempt_is_audited_as_failed(
    secured: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(secured.running.servers[1].app.auth, "check", broken)
    res = secured.post("/api/v1/drain", DRAIN, headers={"Authorization": basic("bob", "bob-pw")})
    assert res.status == 500 and b"boom" not in res.body
    [line] = secured.audit()
    assert (line["outcome"], line["status"], line["error"]) == ("failed", 500, "internal error: RuntimeError")


def test_password_guessing_on_reads_is_throttled_but_a_verified_scraper_is_not(secured: Harness) -> None:
    alice = {"Authorization": basic("alice", "alice-pw")}
    assert secured.get("/metrics", headers=alice).status == 200  # verified once, then cached
    statuses = [
        secured.get("/-/healthy", headers={"Authorization": basic("alice", f"guess-{i}")}).status
        for i in range(2 * GUESS_BURST)
    ]
    first = statuses.index(429)  # the burst counts alice's own first check; a slow machine earns a token back
    assert statuses[:first] == [401] * first and GUESS_BURST - 1 <= first <= GUESS_BURST + 1
    res = secured.get("/api/v1/snapshot", headers={"Authorization": basic("alice", "one-more")})
    assert res.status == 429 and int(res.headers["retry-after"]) >= 1
    assert secured.get("/metrics", headers=alice).status == 200


def test_roles_reader_operator_admin(secured: Harness) -> None:
    as_ = {name: {"Authorization": basic(name, f"{name}-pw")} for name in ("alice", "bob", "carol")}
    assert secured.post("/api/v1/drain", {**DRAIN, "dry_run": True}, headers=as_["alice"]).status == 403
    assert secured.post("/api/v1/drain", {**DRAIN, "dry_run": True}, headers=as_["bob"]).status == 200
    forced = {**DRAIN, "weight": 1, "force": True, "reason": "r", "dry_run": True}
    assert secured.post("/api/v1/weight", forced, headers=as_["bob"]).status == 403
    assert secured.post("/api/v1/weight", forced, headers=as_["carol"]).status == 200
    actors = [(a["actor"], a["status"]) for a in secured.audit()]
    assert actors == [("alice", 403), ("bob", 200), ("bob", 403), ("carol", 200)]


def test_the_actor_comes_from_the_credential_never_a_header(secured: Harness) -> None:
    hdrs = {"Authorization": basic("bob", "bob-pw"), "X-Remote-User": "carol", "X-Forwarded-User": "carol"}
    assert secured.post("/api/v1/drain", {**DRAIN, "dry_run": True}, headers=hdrs).status == 200
    assert secured.audit()[-1]["actor"] == "bob"


def test_audit_lines_equal_attempts(secured: Harness) -> None:
    bob = {"Authorization": basic("bob", "bob-pw")}
    attempts: list[Callable[[], Reply]] = [
        lambda: secured.post("/api/v1/drain", DRAIN),
        lambda: secured.post("/api/v1/drain", DRAIN, headers=bob),
        lambda: secured.post("/api/v1/drain", DRAIN, headers=bob),
        lambda: secured.post("/api/v1/restore", {**DRAIN, "dry_run": True}, headers=bob),
        lambda: secured.post("/api/v1/restore", DRAIN, headers=bob),
        lambda: secured.post("/api/v1/restore", DRAIN, headers=bob),
        lambda: secured.request("GET", "/api/v1/restore", headers=bob),
        lambda: secured.post("/api/v1/weight", {**DRAIN, "weight": 70000}, headers=bob),
    ]
    statuses = [a().status for a in attempts]
    assert statuses == [401, 200, 200, 200, 200, 409, 405, 400]
    lines = secured.audit()
    assert len(lines) == len(attempts)
    assert [a["outcome"] for a in lines] == [
        "rejected",
        "applied",
        "unchanged",
        "dry_run",
        "applied",
        "rejected",
        "rejected",
        "rejected",
    ]
    page = secured.get("/metrics", headers=bob).body.decode()
    assert 'lvstop_weight_edits_total{outcome="rejected"} 4' in page
    assert 'lvstop_weight_edits_total{outcome="applied"} 2' in page


# --- listener safety ---


def test_non_loopback_write_listener_is_refused_without_tls_and_auth(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [
            "--source",
            "demo",
            "--write.enable",
            "--write.listen-address",
            "0.0.0.0:0",
            "--drain-state",
            str(tmp_path / "d.json"),
        ]
    )
    with pytest.raises(ValueError, match="without TLS and authentication"):
        start(args, SimSource(seed=1))
    cfg = web_config(tmp_path)  # auth but no TLS: still refused
    args = build_parser().parse_args(
        [
            "--source",
            "demo",
            "--write.enable",
            "--write.listen-address",
            "0.0.0.0:0",
            "--web.config.file",
            str(cfg),
            "--drain-state",
            str(tmp_path / "d.json"),
        ]
    )
    with pytest.raises(ValueError, match="without TLS and authentication"):
        start(args, SimSource(seed=1))


def test_writes_are_off_unless_enabled(tmp_path: Path) -> None:
    h = start_exporter(tmp_path, write=False)
    try:
        assert h.write_url is None
        assert h.post("/api/v1/drain", DRAIN, write=False).status == 403
        assert h.get("/api/v1/status").json()["writes"]["enabled"] is False
    finally:
        h.running.stop()


def test_tls_with_auth_may_listen_beyond_loopback(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    cfg = web_config(tmp_path, (cert, key))
    args = build_parser().parse_args(
        [
            "--source",
            "demo",
            "--write.enable",
            "--write.listen-address",
            "0.0.0.0:0",
            "--web.listen-address",
            "127.0.0.1:0",
            "--web.config.file",
            str(cfg),
            "--drain-state",
            str(tmp_path / "d.json"),
            "--audit-log",
            str(tmp_path / "a.jsonl"),
            "--no-collector.conntable",
        ]
    )
    running = start(args, SimSource(seed=1))
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        port = running.servers[1].server_address[1]
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        conn.request(
            "POST",
            "/api/v1/drain",
            body=json.dumps({**DRAIN, "dry_run": True}),
            headers={
                "Content-Type": "application/json",
                "X-Lvstop-Request": "1",
                "Authorization": basic("bob", "bob-pw"),
            },
        )
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["outcome"] == "dry_run"
        conn.close()
        assert running.servers[1].url.startswith("https://")
    finally:
        running.stop()


def test_a_corrupt_drain_state_file_does_not_take_the_metrics_down(tmp_path: Path) -> None:
    state = tmp_path / "state" / "drains.json"
    state.parent.mkdir(parents=True)
    state.write_text("{not json")
    h = start_exporter(tmp_path)
    try:
        deadline = time.monotonic() + 10
        while b"lvstop_ipvs_backend_weight{" not in (page := h.get("/metrics")).body:
            assert page.status == 200 and time.monotonic() < deadline
            time.sleep(0.1)
        refused = h.post("/api/v1/drain", DRAIN)
        assert refused.status == 500 and b"unreadable drain state" in refused.body
        assert state.read_text() == "{not json"  # never overwritten
        # Not ready, and the status and a metric say why.
        h.poll()
        ready = h.get("/-/ready")
        assert ready.status == 503 and b"drain state" in ready.body and b"unreadable" in ready.body
        assert any("drain state unusable" in w for w in h.get("/api/v1/status").json()["warnings"])
        assert b"\nlvstop_drain_state_ok 0\n" in h.get("/metrics").body
        state.unlink()  # the operator moved it away
        h.poll()
        assert h.get("/-/ready").status == 200
        assert b"\nlvstop_drain_state_ok 1\n" in h.get("/metrics").body
    finally:
        h.running.stop()


def test_a_weight_put_back_outside_lvstop_ends_the_drain_on_the_next_tick(exporter: Harness) -> None:
    assert exporter.post("/api/v1/drain", DRAIN).status == 200
    exporter.poll()
    assert len(exporter.get("/api/v1/drains").json()["drains"]) == 1
    d = exporter.source.get_dest(WEB, dkey())
    assert d is not None
    exporter.source.set_dest(WEB, dataclasses.replace(d, weight=100))  # keepalived puts its weight back
    exporter.poll()
    assert exporter.get("/api/v1/drains").json()["drains"] == []
    events = exporter.get("/api/v1/events").json()["events"]
    closed = [e for e in events if e["kind"] == "drain_closed"]
    assert len(closed) == 1 and closed[0]["new"] == 100 and closed[0]["actor"] is None


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def _ec_key() -> list[str]:
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def test_client_allowed_sans_is_enforced_and_each_header_is_sent_once(tmp_path: Path) -> None:
    d = tmp_path
    _openssl("req", "-x509", *_ec_key(), "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
             "-days", "1", "-keyout", str(d / "srv.key"), "-out", str(d / "srv.pem"))  # fmt: skip
    _openssl("req", "-x509", *_ec_key(), "-subj", "/CN=test-ca", "-days", "1",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))  # fmt: skip
    for name in ("good.example", "bad.example"):
        (d / f"{name}.ext").write_text(f"subjectAltName=DNS:{name}\n")
        _openssl("req", *_ec_key(), "-subj", f"/CN={name}", "-keyout", str(d / f"{name}.key"),
                 "-out", str(d / f"{name}.csr"))  # fmt: skip
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"), "-CAkey",
                 str(d / "ca.key"), "-CAcreateserial", "-days", "1", "-extfile", str(d / f"{name}.ext"),
                 "-out", str(d / f"{name}.pem"))  # fmt: skip
    cfg = d / "web.yml"
    cfg.write_text(
        json.dumps(
            {
                "tls_server_config": {
                    "cert_file": "srv.pem",
                    "key_file": "srv.key",
                    "client_auth_type": "RequireAndVerifyClientCert",
                    "client_ca_file": "ca.pem",
                    "client_allowed_sans": ["good.example"],
                },
                "http_server_config": {
                    "headers": {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "deny"}
                },
            }
        )
    )
    h = start_exporter(tmp_path, "--web.config.file", str(cfg), write=False)
    try:
        port = h.running.servers[0].server_address[1]

        def get(client: str) -> http.client.HTTPResponse:
            ctx = ssl.create_default_context(cafile=str(d / "srv.pem"))
            ctx.load_cert_chain(str(d / f"{client}.pem"), str(d / f"{client}.key"))
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
            conn.request("GET", "/-/healthy")
            return conn.getresponse()

        good = get("good.example")
        assert good.status == 200
        assert good.headers.get_all("X-Content-Type-Options") == ["nosniff"]
        assert good.headers.get_all("X-Frame-Options") == ["deny"]
        with pytest.raises((OSError, http.client.HTTPException)):
            get("bad.example")
    finally:
        h.running.stop()


def test_a_request_head_has_a_deadline_however_slowly_it_comes(exporter: Harness) -> None:
    for addr in listener(exporter, head_deadline=0.5):
        s = socket.create_connection(addr, timeout=5)
        t0 = time.monotonic()
        closed = False
        for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa":
            try:
                s.send(bytes([byte]))  # a byte every 0.05 s: never idle long, never done
                time.sleep(0.05)
            except OSError:
                closed = True
                break
            if time.monotonic() - t0 > 5:
                break
        if not closed:
            s.settimeout(2)
            closed = s.recv(1) == b""
        assert closed and time.monotonic() - t0 < 3
        s.close()


def test_slow_clients_in_every_slot_do_not_keep_a_scrape_out(exporter: Harness) -> None:
    for addr in listener(exporter, max_connections=4):
        slow = [socket.create_connection(addr, timeout=5) for _ in range(4)]
        for s in slow:
            s.send(b"GET /metrics HTTP/1.1\r\n")  # and never more
        time.sleep(0.3)
        conn = http.client.HTTPConnection(*addr, timeout=10)
        conn.request("GET", "/-/healthy")
        assert conn.getresponse().status == 200
        conn.close()
        for s in slow:
            s.close()


def test_a_reload_serves_the_new_certificate(tmp_path: Path) -> None:
    def make_cert(cn: str) -> bytes:
        _openssl("req", "-x509", *_ec_key(), "-subj", f"/CN={cn}", "-days", "1",
                 "-keyout", str(tmp_path / "srv.key"), "-out", str(tmp_path / "srv.pem"))  # fmt: skip
        return ssl.PEM_cert_to_DER_cert((tmp_path / "srv.pem").read_text())

    def served(port: int) -> bytes:
        return ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", port), timeout=10))

    first = make_cert("first")
    cfg = tmp_path / "web.yml"
    cfg.write_text(json.dumps({"tls_server_config": {"cert_file": "srv.pem", "key_file": "srv.key"}}))
    h = start_exporter(tmp_path, "--web.config.file", str(cfg), write=False)
    try:
        port = h.running.servers[0].server_address[1]
        assert served(port) == first
        second = make_cert("second")  # renewed in place
        assert second != first and h.running.reload()
        assert served(port) == second
    finally:
        h.running.stop()
