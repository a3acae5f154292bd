"""The exposition: golden pages, promtool, values equal to the snapshot, cardinality flags, caching.

Golden files are rewritten with LVSTOP_UPDATE_GOLDEN=1 (node_exporter's -update flag); review the diff.
"""

from __future__ import annotations

import dataclasses
import gc
import gzip
import os
import subprocess
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lvstop import codec, gcpolicy
from lvstop.exporter.core import (
    SNAPSHOT_CHUNK,
    PageCache,
    write_snapshot,
)
from lvstop.exporter.metrics import (
    CHUNK_LINES,
    DEST_LABELS,
    Body,
    BodyWriter,
    ConnStats,
    ControlView,
    Family,
    Health,
    Inputs,
    Options,
    Spec,
    render,
    render_inputs,
    service_label_values,
)
from lvstop.model import (
    AF_INET,
    AF_INET6,
    Counters,
    Daemon,
    DaemonState,
    Dest,
    FwdMethod,
    Protocol,
    Rates,
    Service,
    ServiceKey,
    Snapshot,
)

from .support import FIXTURES, conn_of, demo_director, golden_inputs, kernel_snapshot

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("LVSTOP_UPDATE_GOLDEN") == "1"
PROMTOOL = "/usr/bin/promtool"


def page(inp: Inputs, keep_limit: int = 32 << 20) -> str:
    body = render_inputs(inp, keep_limit)
    text = gzip.decompress(body.gzip).decode()
    assert body.size == len(text.encode())
    return text


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


def promtool_check(text: str) -> None:
    res = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), res.stdout + res.stderr


def kernel_inputs(options: Options | None = None) -> Inputs:
    snap = kernel_snapshot()
    lines = (FIXTURES / "kernel-6.1-ip_vs_conn.txt").read_text().splitlines(keepends=True)
    return golden_inputs(snap, conn_of(snap, lines), options)


def demo_inputs() -> Inputs:
    snap, lines = demo_director()
    return golden_inputs(snap, conn_of(snap, lines))


CASES: dict[str, Callable[[], Inputs]] = {
    "demo": demo_inputs,
    "kernel-6.1": kernel_inputs,
    "kernel-6.1-service-labels-only": lambda: kernel_inputs(
        Options(dest_labels=("family", "local_address", "local_mark", "local_port", "proto"))
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_page(name: str) -> None:
    text = page(CASES[name]())
    path = GOLDEN / f"{name}.prom"
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs; LVSTOP_UPDATE_GOLDEN=1 rewrites it"


@pytest.mark.parametrize("name", sorted(CASES))
def test_promtool_finds_nothing(name: str) -> None:
    promtool_check(page(CASES[name]()))


def test_every_dest_and_service_value_equals_the_snapshot() -> None:
    inp = kernel_inputs()
    got = samples(page(inp))
    assert inp.snapshot is not None
    checked = 0
    for svc in inp.snapshot.services:
        slab = service_label_values(svc.key)
        assert svc.counters is not None and svc.rates is not None
        assert (
            got[("lvstop_ipvs_service_connections_total", tuple(sorted(slab.items())))] == svc.counters.conns
        )
        assert (
            got[("lvstop_ipvs_service_outgoing_bytes_per_second", tuple(sorted(slab.items())))]
            == svc.rates.outbps
        )
        assert got[("lvstop_ipvs_service_weight", tuple(sorted(slab.items())))] == svc.live_weight
        for d in svc.dests:
            lab = tuple(sorted({**slab, "remote_address": d.address, "remote_port": str(d.port)}.items()))
            assert d.counters is not None and d.rates is not None
            expect = {
                "lvstop_ipvs_backend_connections_total": d.counters.conns,
                "lvstop_ipvs_backend_incoming_packets_total": d.counters.inpkts,
                "lvstop_ipvs_backend_outgoing_packets_total": d.counters.outpkts,
                "lvstop_ipvs_backend_incoming_bytes_total": d.counters.inbytes,
                "lvstop_ipvs_backend_outgoing_bytes_total": d.counters.outbytes,
                "lvstop_ipvs_backend_connections_per_second": d.rates.cps,
                "lvstop_ipvs_backend_incoming_bytes_per_second": d.rates.inbps,
                "lvstop_ipvs_backend_connections_active": d.active_conns,
                "lvstop_ipvs_backend_connections_inactive": d.inactive_conns,
                "lvstop_ipvs_backend_connections_persistent": d.persist_conns,
                "lvstop_ipvs_backend_weight": d.weight,
                "lvstop_ipvs_backend_upper_threshold": d.u_threshold,
            }
            for name, value in expect.items():
                assert got[(name, lab)] == value, (name, lab)
                checked += 1
    assert checked == 12 * sum(len(s.dests) for s in inp.snapshot.services)
    totals = inp.snapshot.totals
    assert totals is not None and got[("lvstop_ipvs_incoming_bytes_total", ())] == totals.inbytes


def test_dropped_dest_labels_are_summed_like_node_exporter() -> None:
    keep = ("family", "local_address", "local_port", "proto", "remote_address")
    inp = kernel_inputs(Options(dest_labels=keep))
    got = samples(page(inp))
    assert inp.snapshot is not None
    expected: Counter[tuple[tuple[str, str], ...]] = Counter()
    for svc in inp.snapshot.services:
        values = service_label_values(svc.key)
        for d in svc.dests:
            full = {**values, "remote_address": d.address, "remote_port": str(d.port)}
            assert d.counters is not None
            expected[tuple(sorted((k, full[k]) for k in keep))] += d.counters.inbytes
    series = {lab: v for (n, lab), v in got.items() if n == "lvstop_ipvs_backend_incoming_bytes_total"}
    assert series == expected
    assert all(dict(lab).keys() == set(keep) for lab in series)


def test_all_dest_labels_dropped_gives_one_summed_sample_per_family() -> None:
    inp = kernel_inputs(Options(dest_labels=()))
    got = samples(page(inp))
    assert inp.snapshot is not None
    dests = [d for svc in inp.snapshot.services for d in svc.dests]
    assert got[("lvstop_ipvs_backend_incoming_bytes_total", ())] == sum(
        d.counters.inbytes for d in dests if d.counters is not None
    )
    info = {lab: v for (n, lab), v in got.items() if n == "lvstop_ipvs_backend_info"}
    assert sum(info.values()) == len(dests) and all(dict(lab).keys() >= {"forwarding"} for lab in info)


def test_rows_generated_while_rendering_equal_rows_given_as_a_list() -> None:
    spec, empty = Spec("x_total", "counter", "X."), Spec("y", "gauge", "Y.")
    rows = [(f'n="{i}"', i) for i in range(CHUNK_LINES * 2 + 1)]
    nothing: list[tuple[str, int | float | None]] = [('n="0"', None)] * (CHUNK_LINES + 1)
    pages = []
    for wrap in (list, iter):
        w = BodyWriter()
        render([Family(spec, wrap(rows)), Family(empty, wrap(nothing))], w, 2.0)
        pages.append(w.finish())
    assert pages[0].identity == pages[1].identity == gzip.decompress(pages[1].gzip)
    assert pages[1].identity is not None
    text = pages[1].identity.decode()
    assert text.count("# TYPE") == 1 and "# TYPE y" not in text  # a family without samples has no header
    assert [v for (_n, _l), v in samples(text).items()] == list(range(CHUNK_LINES * 2 + 1))


@pytest.mark.parametrize("keep", [0, 64 << 20])
def test_a_page_is_held_only_compressed_while_it_is_written(keep: int) -> None:
    """The identity bytes of a page small enough to keep are inflated from the gzip at its end, never
    buffered while it is written: a page too big to keep costs no plain copy, not keep_limit bytes of one
    thrown away when it outgrows them (before its end, its size is unknown)."""
    line = "x" * 1000 + "\n"
    w = BodyWriter(keep)
    tracemalloc.start()
    try:
        for _ in range(20_000):  # 20 MB of text
            w.write(line)
        held = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    body = w.finish()
    assert held < 2 << 20
    assert body.size == 20_000 * len(line) and gzip.decompress(body.gzip) == (line * 20_000).encode()
    assert body.identity == (None if keep == 0 else gzip.decompress(body.gzip))


def test_rendering_dests_makes_no_label_text_per_dest() -> None:
    """With the default labels a dest's label text is composed while its line is written: what a render
    holds grows by far less per dest than one label text (~180 bytes) plus one value per family."""
    peaks = []
    for services in (50, 200):  # 5,000 and 20,000 dests
        snap, _ = demo_director(polls=1, services=services, dests_per_service=100)
        inp = Inputs(snap, Health("demo", True, 0.0, 0.0))
        render_inputs(inp, 0)  # the snapshot's columns and caches are made
        tracemalloc.start()
        try:
            render_inputs(inp, 0)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert (peaks[1] - peaks[0]) / 15_000 < 200  # bytes per dest (labels made up front: ~360)


def test_per_dest_and_conntable_metrics_can_be_turned_off() -> None:
    names = {n for n, _ in samples(page(kernel_inputs(Options(dest_metrics=False, conntable_metrics=False))))}
    assert not any(
        n.startswith("lvstop_ipvs_backend_") and "drain" not in n and "external" not in n for n in names
    )
    assert not any(n.startswith("lvstop_ipvs_conntable_") for n in names)
    assert "lvstop_ipvs_service_connections_total" in names


def _svc(key: ServiceKey, dest_addr: str) -> Service:
    fam = AF_INET6 if ":" in dest_addr else AF_INET
    d = Dest(fam, dest_addr, 80, FwdMethod.ROUTE, 1, counters=Counters(1, 2, 3, 4, 5), rates=Rates())
    return Service(key, "rr", counters=Counters(1, 2, 3, 4, 5), rates=Rates(), dests=(d,))


def test_fwmark_ipv6_and_sctp_services_never_collide() -> None:
    snap = Snapshot(
        "netlink",
        "d",
        0.0,
        0.0,
        services=(
            _svc(ServiceKey.mark(1), "192.0.2.11"),
            _svc(ServiceKey.mark(1, AF_INET6), "192.0.2.11"),  # same mark, same real server, other family
            _svc(ServiceKey.tcp("203.0.113.20", 3868), "192.0.2.11"),
            _svc(ServiceKey(AF_INET, Protocol.SCTP, "203.0.113.20", 3868), "192.0.2.11"),
            _svc(ServiceKey.tcp("2001:db8::20", 80), "2001:db8::11"),
        ),
    )
    text = page(Inputs(snap, Health("netlink", True, 0.0, 0.0)))
    got = samples(text)  # asserts no duplicate series
    weights = [lab for n, lab in got if n == "lvstop_ipvs_backend_weight"]
    assert len(weights) == 5
    assert {dict(lab)["proto"] for lab in weights} == {"FWM", "TCP", "SCTP"}
    promtool_check(text)


def test_a_service_read_inconsistently_has_no_sums() -> None:
    svc = dataclasses.replace(
        _svc(ServiceKey.tcp("203.0.113.20", 80), "192.0.2.11"), error="vanished mid-dump"
    )
    got = samples(
        page(Inputs(Snapshot("netlink", "d", 0.0, 0.0, services=(svc,)), Health("netlink", True, 0.0, 0.0)))
    )
    names = {n for n, _ in got}
    assert "lvstop_ipvs_service_connections_total" in names and "lvstop_ipvs_backend_weight" in names
    assert "lvstop_ipvs_service_weight" not in names and "lvstop_ipvs_service_backends" not in names


def test_what_proc_cannot_see_is_absent_not_zero() -> None:
    d = Dest(AF_INET, "192.0.2.11", 80, FwdMethod.MASQ, 3, persist_conns=None)
    svc = Service(ServiceKey.tcp("203.0.113.20", 80), "wlc", dests=(d,))
    got = samples(
        page(Inputs(Snapshot("proc", "d", 0.0, 0.0, services=(svc,)), Health("proc", True, 0.0, 0.0)))
    )
    names = {n for n, _ in got}
    assert "lvstop_ipvs_backend_weight" in names and "lvstop_ipvs_backend_connections_active" in names
    assert not names & {
        "lvstop_ipvs_backend_connections_total",
        "lvstop_ipvs_backend_connections_per_second",
        "lvstop_ipvs_backend_connections_persistent",
        "lvstop_ipvs_service_connections_total",
    }


def test_label_values_are_escaped() -> None:
    snap = Snapshot("netlink", "d", 0.0, 0.0, daemons=(Daemon(DaemonState.MASTER, 'we"ird\\if\n', 7),))
    text = page(Inputs(snap, Health("netlink", True, 0.0, 0.0)))
    got = samples(text)
    assert (
        got[
            (
                "lvstop_ipvs_sync_daemon_info",
                (("interface", 'we"ird\\if\n'), ("state", "master"), ("syncid", "7")),
            )
        ]
        == 1
    )
    promtool_check(text)


def test_help_says_values_are_cached_per_tick() -> None:
    text = page(dataclasses.replace(kernel_inputs(), options=Options(tick=5)))
    helps = [line for line in text.splitlines() if line.startswith("# HELP lvstop_ipvs_backend_weight ")]
    assert len(helps) == 1 and "once per 5 s poll tick" in helps[0]


def test_unknown_dest_label_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown dest label"):
        Options(dest_labels=("local_address", "hostname"))
    assert set(DEST_LABELS) >= {
        "local_address",
        "local_port",
        "remote_address",
        "remote_port",
        "proto",
        "local_mark",
    }


def test_a_page_too_big_to_keep_is_held_only_compressed() -> None:
    inp = kernel_inputs()
    whole = render_inputs(inp)
    small = render_inputs(inp, keep_limit=1000)
    assert whole.identity is not None and small.identity is None
    assert b"".join(small.identity_chunks(chunk=512)) == whole.identity
    assert gzip.decompress(small.gzip) == whole.identity


def test_the_page_renders_once_for_concurrent_requests() -> None:
    calls = []
    gate = threading.Event()

    def slow_render() -> None:
        calls.append(1)
        gate.wait(1)

    cache = PageCache(slow_render)
    key = object()
    threads = [threading.Thread(target=cache.get, args=(key,)) for _ in range(20)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    assert len(calls) == 1 and cache.renders == 1
    cache.get(object())
    assert cache.renders == 2


def test_a_render_leaves_the_collector_nothing_young_to_walk() -> None:
    """In a managed process a render runs with the collector paused and freezes what is alive before it
    is back, so the collector does not walk the render's leftovers at once with the GIL held."""
    cache = PageCache(lambda: render_inputs(kernel_inputs()))
    gcpolicy.manage()
    try:
        frozen = gc.get_freeze_count()
        cache.get(object())
        assert gc.isenabled() and gc.get_count()[0] < 100 and gc.get_freeze_count() > frozen
    finally:
        gcpolicy.release()


@pytest.mark.parametrize("services", [0, 1, SNAPSHOT_CHUNK, 2 * SNAPSHOT_CHUNK + 3])
def test_the_snapshot_page_is_codec_dumps_written_in_pieces(services: int) -> None:
    snap, _ = demo_director(polls=2, services=max(1, services), dests_per_service=2)
    snap = dataclasses.replace(snap, services=snap.services[:services])
    w = BodyWriter()
    write_snapshot(snap, w)
    assert w.finish().identity == codec.dumps(snap).encode()


def test_requests_during_a_render_get_the_previous_page() -> None:
    gate = threading.Event()
    first, second = Body(b"1", 1, b"1"), Body(b"2", 1, b"2")
    bodies = iter([first, second])

    def render() -> Body:
        body = next(bodies)
        if body is second:
            gate.wait(5)
        return body

    cache = PageCache(render)
    one, two = object(), object()
    assert cache.get(one) is first
    t = threading.Thread(target=cache.get, args=(two,))
    t.start()
    while not cache._rendering:  # the thread is now inside the render
        time.sleep(0.001)
    assert cache.get(two) is first  # served at once, one poll old
    gate.set()
    t.join()
    assert cache.get(two) is second and cache.renders == 2


def test_conntable_aggregates_match_the_table() -> None:
    inp = kernel_inputs()
    got = samples(page(inp))
    lines = (FIXTURES / "kernel-6.1-ip_vs_conn.txt").read_text().splitlines()[1:]
    conn = inp.conn
    assert isinstance(conn, ConnStats) and conn.total == len(lines)
    entries = sum(v for (n, _), v in got.items() if n == "lvstop_ipvs_conntable_entries")
    templates = sum(v for (n, _), v in got.items() if n == "lvstop_ipvs_conntable_templates")
    assert entries + templates == len(lines)
    assert templates == sum(1 for line in lines if line.split()[2] == "0000")


def test_control_view_shows_drains_edits_and_outside_changes() -> None:
    got = samples(page(kernel_inputs()))
    drains = {lab: v for (n, lab), v in got.items() if n == "lvstop_ipvs_backend_drain_previous_weight"}
    assert list(drains.values()) == [7]
    assert got[("lvstop_weight_edits_total", (("outcome", "applied"),))] == 3
    assert got[("lvstop_weight_managers", (("name", "keepalived"),))] == 1
    assert got[("lvstop_weight_managers", (("name", "ldirectord"),))] == 0
    assert (
        sum(v for (n, _), v in got.items() if n == "lvstop_ipvs_backend_external_weight_changes_total") == 2
    )


def test_an_empty_exporter_still_says_how_it_is() -> None:
    text = page(Inputs(None, Health("netlink", False, None, None, {"no_ipvs": 3}), ControlView()))
    got = samples(text)
    assert got[("lvstop_poll_success", ())] == 0
    assert got[("lvstop_poll_errors_total", (("kind", "no_ipvs"),))] == 3
    promtool_check(text)
