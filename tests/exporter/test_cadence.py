"""Polls on demand (no --interval): IPVS is read when a scrape or an API request asks, at most once per
kernel tick; what an outside weight change, a drain and its undoing look like at that cadence."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import WEB, Harness, dest_json, dkey, key_json, start_exporter


@pytest.fixture
def lazy(tmp_path: Path) -> Iterator[tuple[Harness, list[float]]]:
    """An on-demand exporter whose poller reads a clock the test moves (starting at the real one)."""
    h = start_exporter(tmp_path)
    now = [time.monotonic()]
    h.running.poller._clock = lambda: now[0]
    yield h, now
    h.running.stop()


def series(h: Harness, name: str, addr: str) -> str | None:
    page = h.get("/metrics").body.decode()
    return next(
        (x for x in page.splitlines() if x.startswith(name + "{") and f'remote_address="{addr}"' in x), None
    )


def test_without_interval_the_exporter_reads_when_asked_and_at_most_once_per_tick(
    lazy: tuple[Harness, list[float]],
) -> None:
    h, now = lazy
    poller = h.running.poller
    assert poller.on_demand
    deadline = time.monotonic() + 10
    while poller._worker is not None and poller._worker.is_alive():  # the thread stops after its first poll
        assert time.monotonic() < deadline
        time.sleep(0.01)
    seq = poller.latest.seq  # type: ignore[union-attr]
    d = h.source.get_dest(WEB, dkey("192.0.2.12"))
    assert d is not None
    h.source.set_dest(WEB, dataclasses.replace(d, weight=3))  # keepalived, say
    for _ in range(3):  # within the tick: the page already rendered, no new read
        assert series(h, "lvstop_ipvs_backend_weight", "192.0.2.12") == series(
            h, "lvstop_ipvs_backend_weight", "192.0.2.12"
        )
        assert not (series(h, "lvstop_ipvs_backend_weight", "192.0.2.12") or "").endswith(" 3")
    assert poller.latest.seq == seq  # type: ignore[union-attr]
    now[0] += 2.0
    assert (series(h, "lvstop_ipvs_backend_weight", "192.0.2.12") or "").endswith(" 3")
    assert poller.latest.seq == seq + 1  # type: ignore[union-attr]
    external = series(h, "lvstop_ipvs_backend_external_weight_changes_total", "192.0.2.12")
    assert external is not None and external.endswith(" 1")
    events = h.get("/api/v1/events").json()["events"]
    assert any(e["kind"] == "weight_changed" and e["actor"] is None and e["new"] == 3 for e in events)
    now[0] += 10.0  # a JSON reader polls too
    assert h.get("/api/v1/snapshot").status == 200 and poller.latest.seq == seq + 2  # type: ignore[union-attr]


def test_a_drain_undone_outside_is_closed_at_the_next_scrape_after_a_tick(
    lazy: tuple[Harness, list[float]],
) -> None:
    h, now = lazy
    body = {"service": key_json(), "dest": dest_json()}
    assert h.post("/api/v1/drain", {**body, "reason": "kernel update"}).status == 200
    now[0] += 2.0
    drains = h.get("/api/v1/drains").json()["drains"]  # drain progress read as of now
    assert [(x["previous"], x["weight"]) for x in drains] == [(100, 0)]
    assert series(h, "lvstop_ipvs_backend_drain_previous_weight", "192.0.2.11") is not None
    d = h.source.get_dest(WEB, dkey())
    assert d is not None
    h.source.set_dest(WEB, dataclasses.replace(d, weight=100))  # keepalived puts it back
    assert series(h, "lvstop_ipvs_backend_drain_previous_weight", "192.0.2.11") is not None  # same tick
    now[0] += 2.0
    assert series(h, "lvstop_ipvs_backend_drain_previous_weight", "192.0.2.11") is None
    assert h.get("/api/v1/drains").json()["drains"] == []
    kinds = [e["kind"] for e in h.get("/api/v1/events").json()["events"]]
    assert "drain_closed" in kinds


def test_an_interval_still_forces_a_period(tmp_path: Path) -> None:
    h = start_exporter(tmp_path, "--interval", "0.2")
    try:
        assert not h.running.poller.on_demand
        seq = h.running.poller.latest.seq  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while h.running.poller.latest.seq < seq + 2:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no polls without requests"
            time.sleep(0.02)
    finally:
        h.running.stop()
