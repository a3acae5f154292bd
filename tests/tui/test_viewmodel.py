"""The view model and units: pure functions from snapshots to rows, headers and notes (no Textual)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from lvstop.conntable import ConnTable
from lvstop.control import DrainRecord
from lvstop.events import Event
from lvstop.model import (
    AF_INET,
    SVC_F_PERSISTENT,
    Counters,
    Daemon,
    DaemonState,
    Dest,
    DestKey,
    FwdMethod,
    Rates,
    Service,
    ServiceKey,
    ServiceRows,
    Snapshot,
    Timeouts,
)
from lvstop.tui import units
from lvstop.tui import viewmodel as vm

WEB = ServiceKey.tcp("203.0.113.10", 80)
DNS = ServiceKey.udp("203.0.113.10", 53)


def dest(
    last: int, weight: int = 1, active: int = 0, inactive: int = 0, cps: float = 0, **kw: object
) -> Dest:
    r = Rates(cps=cps)
    return Dest(
        AF_INET,
        f"192.0.2.{last}",
        80,
        FwdMethod.MASQ,
        weight,
        active_conns=active,
        inactive_conns=inactive,
        rates=r,
        instant=r,
        **kw,  # type: ignore[arg-type]
    )


def snapshot(*services: Service, seq: int = 1, **kw: object) -> Snapshot:
    return Snapshot("fake", "lb1", 1.7e9, 100.0, services, seq=seq, **kw)  # type: ignore[arg-type]


def service(key: ServiceKey, *dests: Dest, cps: float = 0, **kw: object) -> Service:
    return Service(
        key,
        "wlc",
        dests=dests,
        rates=Rates(cps=cps),
        counters=Counters(conns=int(cps) * 10),
        **kw,  # type: ignore[arg-type]
    )


class TestUnits:
    @pytest.mark.parametrize(
        ("value", "human", "exact"),
        [
            (0, "0", "0"),
            (999, "999", "999"),
            (1234, "1.2k", "1,234"),
            (12_345, "12k", "12,345"),
            (999_999, "1.0M", "999,999"),
            (2.5, "2.5", "2.5"),
            (3_400_000_000, "3.4G", "3,400,000,000"),
        ],
    )
    def test_count(self, value: float, human: str, exact: str) -> None:
        assert units.count(value) == human
        assert units.count(value, human=False) == exact

    def test_bytes_and_missing(self) -> None:
        assert units.nbytes(34_000_000) == "34 MB"
        assert units.nbytes(512) == "512 B"
        assert units.count(None) == units.nbytes(None) == "-"

    @pytest.mark.parametrize(
        ("seconds", "text"),
        [
            (0.0042, "4ms"),
            (2.5, "2.5s"),
            (5, "5s"),
            (42, "42s"),
            (185, "3m05s"),
            (7380, "2h03m"),
            (180_000, "2d02h"),
        ],
    )
    def test_duration(self, seconds: float, text: str) -> None:
        assert units.duration(seconds) == text

    def test_sparkline_scales_from_zero(self) -> None:
        assert units.sparkline([0, 0, 0], 5) == "  ▁▁▁"
        assert units.sparkline([0, 1, 2, 3, 4, 5, 6, 7], 8) == "▁▂▃▄▅▆▇█"
        assert units.sparkline([9, 10, 9, 10], 4) == "▇█▇█"  # a wobble, not a cliff
        assert units.sparkline([10, 5, 0], 3) == "█▅▁"  # a fall to nothing reaches the floor
        assert units.sparkline([5, 1, 9], 2) == "▂█"  # only the newest `width` values
        assert units.sparkline([1, 2], 2, top=100) == "▂▂"  # a shared scale; above zero shows a step
        assert units.sparkline([1], 0) == ""


class TestServices:
    def test_sorted_by_numbers_not_by_their_text(self) -> None:
        snap = snapshot(
            service(WEB, dest(1, active=1500)),  # shows 1.5k
            service(DNS, dest(2, active=999)),  # shows 999: sorts above 1.5k as text
            service(ServiceKey.tcp("203.0.113.11", 443), dest(3, active=20)),
        )
        model = vm.services_table(
            snap, vm.ViewSettings(services_sort=vm.SortSpec("active", True)), vm.History()
        )
        assert [r.cells[5] for r in model.rows] == ["1.5k", "999", "20"]
        assert model.index[str(WEB)] == 0 and model.total == 3

    def test_filter_matches_a_dest_address_and_no_live_dest_is_bad(self) -> None:
        snap = snapshot(service(WEB, dest(11), dest(12, weight=0)), service(DNS, dest(13, weight=0)))
        model = vm.services_table(snap, vm.ViewSettings(services_filter="192.0.2.13"), vm.History())
        assert [r.key for r in model.rows] == [str(DNS)]
        assert model.rows[0].tone == vm.BAD and model.rows[0].cells[4] == "0/1"
        everything = vm.services_table(snap, vm.ViewSettings(), vm.History())
        web = everything.rows[everything.index[str(WEB)]]
        assert web.cells[4] == "1/2" and web.cell_tones[4] == vm.DRAINED

    def test_persistent_flags_and_names(self) -> None:
        svc = service(WEB, dest(1), flags=SVC_F_PERSISTENT, timeout=300, netmask=0xFFFFFF00)
        assert vm.service_flags(svc) == "persist 300s /24"
        model = vm.services_table(snapshot(svc), vm.ViewSettings(), vm.History(), lambda a: "www")
        assert model.rows[0].cells[1] == "www:80"

    def test_visible_columns_drop_the_least_important_first(self) -> None:
        model = vm.services_table(snapshot(service(WEB, dest(1))), vm.ViewSettings(), vm.History())
        narrow = [model.columns[i].id for i, _w in vm.visible_columns(model, 40)]
        assert "service" in narrow and "cps" in narrow and "conns" not in narrow
        assert len(vm.visible_columns(model, 1000)) == len(model.columns)

    def test_a_long_text_column_is_cut_rather_than_dropped(self) -> None:
        evs = [Event(1.7e9, "weight_changed", "m", WEB, DestKey(AF_INET, "192.0.2.1", 80), 5, 0, None)]
        model = vm.events_table(evs, vm.ViewSettings())
        shown = dict(vm.visible_columns(model, 78))
        ids = [c.id for c in model.columns]
        assert ids.index("by") in shown and ids.index("change") in shown  # "outside lvstop" stays
        where = ids.index("what")
        assert where in shown and shown[where] < model.widths[where]


class TestDests:
    def test_drained_shows_the_weight_it_gets_back_and_shares_side_by_side(self) -> None:
        svc = service(WEB, dest(1, weight=3, cps=10), dest(2, weight=1, cps=10), dest(3, weight=0, cps=0))
        drains = {(WEB, svc.dests[2].key): DrainRecord(5, 0.0, "alice")}
        model = vm.dests_table(snapshot(svc), vm.ViewSettings(service=WEB), vm.History(), drains)
        cells = {r.key: r.cells for r in model.rows}
        assert cells["192.0.2.3:80"][2] == "0 →5"
        assert (cells["192.0.2.1:80"][3], cells["192.0.2.1:80"][4]) == ("75%", "50%")
        tones = {r.key: r.cell_tones for r in model.rows}
        assert tones["192.0.2.1:80"][3] == vm.WARN  # weight share 75% vs traffic 50%: imbalance

    def test_gone_service(self) -> None:
        model = vm.dests_table(snapshot(), vm.ViewSettings(service=WEB), vm.History(), {})
        assert model.rows == () and "gone" in model.empty

    def test_weight_effect(self) -> None:
        svc = service(WEB, dest(1, weight=3), dest(2, weight=2))
        eff = vm.weight_effect(svc, svc.dests[0].key, 0)
        assert (eff.old, eff.live_before, eff.live_after, eff.live_dests_after) == (3, 5, 2, 1)
        assert not eff.takes_last_weight
        assert vm.weight_effect(
            service(WEB, dest(1, weight=3)), DestKey(AF_INET, "192.0.2.1", 80), 0
        ).takes_last_weight

    def test_notes_follow_a_drain_and_name_what_holds_it(self) -> None:
        svc = service(
            WEB,
            dest(1, weight=5, active=9),
            dest(2, weight=0, active=7, inactive=3, persist_conns=2),
            flags=SVC_F_PERSISTENT,
            timeout=300,
        )
        snap = snapshot(svc, timeouts=Timeouts(900, 120, 300), sysctls={"expire_quiescent_template": 0})
        text = "\n".join(
            "".join(t for t, _ in line)
            for line in vm.dest_notes(
                snap, svc, {(WEB, svc.dests[1].key): DrainRecord(4, 0.0, "tui:oncall")}, vm.History()
            )
        )
        assert "192.0.2.2:80 drained by tui:oncall, restores to 4  7 active, 3 inactive, 2 templates" in text
        assert "up to 300s (expire_quiescent_template=0)" in text
        assert "after 15m00s idle" in text and "within 2m00s" in text
        done = dataclasses.replace(svc, dests=(svc.dests[0], dest(2, weight=0)))
        assert "safe to take down" in "".join(
            t for line in vm.dest_notes(snap, done, {}, vm.History()) for t, _ in line
        )

    def test_a_dest_whose_connections_never_establish(self) -> None:
        dead = dest(2, weight=1, active=0, inactive=40, cps=3)
        svc = service(WEB, dest(1, weight=1, active=30, inactive=5, cps=3), dead)
        assert vm.suspect_dead(svc, dead) and not vm.suspect_dead(svc, svc.dests[0])
        assert not vm.suspect_dead(
            service(DNS, dest(1, active=0, inactive=9, cps=3), dest(3, active=4)),
            dest(1, active=0, inactive=9, cps=3),
        )  # UDP: no "established"
        model = vm.dests_table(snapshot(svc), vm.ViewSettings(service=WEB), vm.History(), {})
        assert model.rows[model.index["192.0.2.2:80"]].cell_tones[5] == vm.BAD


class TestHistoryAndHeader:
    def test_one_point_per_poll_gaps_not_zeros_and_forgetting(self) -> None:
        h = vm.History()
        svc = service(WEB, dest(1, cps=4), cps=4)
        h.record(snapshot(svc, seq=1))
        h.record(snapshot(svc, seq=1))  # the same poll again: no new point
        no_rates = dataclasses.replace(
            svc, rates=None, dests=(dataclasses.replace(svc.dests[0], rates=None),)
        )
        h.record(snapshot(no_rates, seq=2))  # no rate (first poll, reset): no point, not a zero
        assert list(h.service(WEB)) == [4.0] and list(h.dest(WEB, svc.dests[0].key)) == [4.0]
        for seq in range(3, 12):  # services come and go: the gone ones are forgotten, not kept forever
            h.record(snapshot(service(ServiceKey.tcp("203.0.113.20", seq)), seq=seq))
        assert h.service(WEB) == () and h.dest(WEB, svc.dests[0].key) == ()
        assert len(h._services) <= 2 * 1 + 4 + 1

    def test_dest_trends_follow_their_dest_as_dests_come_and_go(self) -> None:
        h = vm.History()
        one, two, three = dest(1, cps=1), dest(2, cps=2), dest(3, cps=3, weight=0, active=7)
        h.record(snapshot(service(WEB, one, two), seq=1))
        moved = service(WEB, dataclasses.replace(one, rates=None), three, dest(2, cps=20))  # 1 has no rate
        h.record(snapshot(service(DNS, dest(9, cps=9)), moved, seq=2))
        assert list(h.dest(WEB, one.key)) == [1] and list(h.dest(WEB, two.key)) == [2, 20]
        assert list(h.dest(WEB, three.key)) == [3] and list(h.dest(DNS, dest(9).key)) == [9]
        assert list(h.draining(WEB, three.key)) == [7]  # a weight-0 dest's active connections
        frozen = h.copy()
        for seq in range(3, 3 + vm.TREND_WIDTH + 2):
            h.record(snapshot(service(WEB, dest(2, cps=seq)), seq=seq))
        assert h.dest(WEB, one.key) == () and h.draining(WEB, three.key) == ()  # gone: forgotten
        assert list(h.dest(WEB, two.key)) == list(range(5, 5 + vm.TREND_WIDTH))  # the newest TREND_WIDTH
        assert list(frozen.dest(WEB, two.key)) == [2, 20]  # a paused copy keeps its own

    def test_paused_copy_is_independent(self) -> None:
        h = vm.History()
        h.record(snapshot(service(WEB, cps=1), seq=1))
        frozen = h.copy()
        h.record(snapshot(service(WEB, cps=2), seq=2))
        assert list(frozen.service(WEB)) == [1.0] and list(h.service(WEB)) == [1.0, 2.0]

    def test_header_and_status(self) -> None:
        snap = snapshot(
            service(WEB, dest(1), dest(2, weight=0)),
            total_rates=Rates(12, 1000, 900, 5e6, 4e7),
            daemons=(Daemon(DaemonState.MASTER, "eth0", 7),),
            timeouts=Timeouts(900, 120, 300),
        )
        lines = [
            "".join(t for c in line for t, _ in c.spans)
            for line in vm.header_lines(snap, vm.History(), vm.ViewSettings())
        ]
        assert lines[0].startswith("lb1 [fake]")
        assert "conn/s 12" in lines[1] and "B/s in 5.0 MB out 40 MB" in lines[1]
        assert "1 services, 2 dests, 1 at weight 0" in lines[2] and "master:eth0/7" in lines[2]
        failing = vm.status_chunks(vm.PollHealth("EPERM", 0.01, 30.0, 2.0), vm.ViewSettings(), paused=True)
        text = "".join(t for c in failing for t, _ in c.spans)
        assert "POLL FAILING" in text and "PAUSED" in text
        stale = vm.status_chunks(vm.PollHealth(None, 0.01, 30.0, 2.0), vm.ViewSettings(), paused=False)
        assert "STALE 30s" in "".join(t for c in stale for t, _ in c.spans)

    def test_fit_chunks_drops_whole_chunks(self) -> None:
        chunks = [
            vm.Chunk((("aaaa", ""),)),
            vm.Chunk((("bbbb", ""),), drop=2),
            vm.Chunk((("cc", ""),), drop=1),
        ]
        assert [c.spans[0][0] for c in vm.fit_chunks(chunks, 6)] == ["aaaa", "cc"]
        assert [c.spans[0][0] for c in vm.fit_chunks(chunks, 1)] == ["aaaa"]


class TestEventsDirectorConns:
    def test_outside_changes_stand_out(self) -> None:
        evs = [
            Event(1.7e9, "weight_changed", "m", WEB, DestKey(AF_INET, "192.0.2.1", 80), 5, 0, "tui:alice"),
            Event(1.7e9 + 2, "weight_changed", "m", WEB, DestKey(AF_INET, "192.0.2.2", 80), 5, 1, None),
            Event(1.7e9 + 4, "poll_failed", "poll failed: EPERM"),
        ]
        model = vm.events_table(evs, vm.ViewSettings())
        by = {r.cells[4]: r.tone for r in model.rows}
        assert by == {"tui:alice": "", "outside lvstop": vm.WARN, "": vm.BAD}
        assert (
            model.rows[0].cells[2] == "poll failed: EPERM"
        )  # newest first; no service: the message says where
        recent = vm.recent_events(evs, 2)
        assert len(recent) == 2 and "poll failed" in "".join(t for t, _ in recent[0])

    def test_director_settings_explain_each_sysctl(self) -> None:
        snap = snapshot(
            timeouts=Timeouts(900, 120, 300), sysctls={"expire_nodest_conn": 0, "am_droprate": 10}
        )
        rows = vm.director_settings(snap)
        names = [(s.section, s.name) for s in rows]
        assert ("Sync daemons", "none") in names and ("Timeouts", "tcpfin") in names
        meaning = {s.name: s.meaning for s in rows}
        assert "a weight-0 dest keeps its connections" in meaning["expire_nodest_conn"]
        assert meaning["am_droprate"]

    def test_conn_filter_words_and_views(self) -> None:
        q = vm.parse_conn_filter("198.51.100.0/24 tcp established", vm.ConnQuery(service=WEB))
        assert (q.service, q.client, q.protocol, q.state) == (WEB, "198.51.100.0/24", "TCP", "ESTABLISHED")
        with pytest.raises(ValueError):
            vm.parse_conn_filter("10.0.0.0/33x", vm.ConnQuery())
        svc = service(WEB, dest(1, weight=1))
        lines = [
            "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n",
            "TCP C6336401 1000 CB00710A 0050 C0000201 0050 ESTABLISHED     890\n",
            "TCP C6336402 1001 CB00710A 0050 C0000201 0050 FIN_WAIT         60\n",
            "TCP C6336401 0000 CB00710A 0050 C0000201 0050 NONE            300\n",
        ]
        summary = ConnTable([svc]).summarize(lines, sync=False, budget_s=None, filters=None)
        views = vm.conn_views(summary, vm.ConnQuery(), error=None, age=1.0, human=True)
        assert "3 of 3 entries, 1 active, 1 inactive, 1 templates" in "".join(t for t, _ in views.line)
        assert {r.key for r in views.states.rows} == {"ESTABLISHED", "FIN_WAIT", "templates"}
        assert views.clients.rows[0].cells == ("198.51.100.1", "1")
        assert views.entries.rows[2].cells[1] == "198.51.100.1 (template)"
        assert views.dest_keys == {f"{WEB} 192.0.2.1:80": (WEB, DestKey(AF_INET, "192.0.2.1", 80))}


def test_services_view_header_and_trends_make_no_row_per_dest() -> None:
    """Rows only for what a screen shows: the services view sums the dests' columns (issue 9)."""
    rows = snapshot(service(WEB, dest(1, active=3), dest(2, weight=0, inactive=4)), service(DNS, dest(3)))
    snap = dataclasses.replace(rows, services=ServiceRows(rows.table))  # as the poller publishes them
    history = vm.History()
    history.record(snap)
    model = vm.services_table(snap, vm.ViewSettings(), history)
    header = vm.header_lines(snap, history, vm.ViewSettings())
    assert snap.services._rows == [None, None]  # type: ignore[attr-defined]
    web = model.rows[model.index[vm.service_id(WEB)]].cells
    assert web[4:7] == ("1/2", "3", "4")  # Live, Active, InAct from the columns
    assert "2 services, 3 dests, 1 at weight 0" in "".join(t for c in header[2] for t, _ in c.spans)
    filtered = vm.services_table(snap, vm.ViewSettings(services_filter="192.0.2.3:80"), history)
    assert [r.key for r in filtered.rows] == [vm.service_id(DNS)]  # a dest's address still finds its service


def test_services_rows_are_reused_while_their_inputs_are_equal() -> None:
    cache = vm.RowCache()
    history = vm.History()
    a = snapshot(service(WEB, dest(1, active=3)), service(DNS, dest(2)), seq=1)
    first = vm.services_table(a, vm.ViewSettings(), history, cache=cache)
    b = snapshot(service(WEB, dest(1, active=4)), service(DNS, dest(2)), seq=2)  # WEB changed
    second = vm.services_table(b, vm.ViewSettings(), history, cache=cache)
    web, dns = vm.service_id(WEB), vm.service_id(DNS)
    assert second.rows[second.index[dns]] is first.rows[first.index[dns]]
    assert second.rows[second.index[web]].cells[5] == "4"
    exact = vm.services_table(b, vm.ViewSettings(human=False), history, cache=cache)  # units changed
    assert exact.rows[exact.index[dns]] is not second.rows[second.index[dns]]
    assert exact.rows == vm.services_table(b, vm.ViewSettings(human=False), history).rows  # as uncached


def test_side_by_side_master_and_backup() -> None:
    master = vm.brief(
        snapshot(service(WEB, dest(1, active=10)), daemons=(Daemon(DaemonState.MASTER, "eth0", 7),))
    )
    backup = vm.brief(
        snapshot(service(WEB, dest(1, active=9)), daemons=(Daemon(DaemonState.BACKUP, "eth0", 7),))
    )
    ok = vm.PollHealth(None, 0.01, 1.0, 2.0)
    model = vm.side_by_side([("a", master, ok), ("b", backup, vm.PollHealth("down", None, None, 2.0))])
    rows = {r.key: r.cells for r in model.rows}
    assert rows["role"] == ("sync daemon", "master eth0/7", "backup eth0/7")
    assert rows["poll"][2] == "FAILING" and rows[str(WEB)] == (str(WEB), "10 / 0", "9 / 0")


def test_headless_modules_do_not_import_textual() -> None:
    """The view model, feed and friends run on worker threads and in benches: no Textual there."""
    mods = (
        "lvstop.tui.viewmodel, lvstop.tui.feed, lvstop.tui.units, lvstop.tui.names, lvstop.tui.playback, "
        "lvstop.tui.writes, lvstop.explain"
    )
    code = f"import sys, {mods}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'textual'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_trends_share_one_scale_shown_in_the_title() -> None:
    """Item 9: a 9 -> 10 wobble next to a draining dest's fall: one scale, from zero, named."""
    history = vm.History()
    for seq, (steady, falling) in enumerate([(9, 40), (10, 30), (9, 20), (10, 10), (9, 0)], start=1):
        history.record(snapshot(service(WEB, dest(1, cps=steady), dest(2, cps=falling)), seq=seq))
    snap = snapshot(service(WEB, dest(1, cps=9), dest(2, weight=0, cps=0)), seq=6)
    model = vm.dests_table(snap, vm.ViewSettings(service=WEB), history, {})
    trend = {r.key: r.cells[-1].strip() for r in model.rows}
    assert trend["192.0.2.1:80"] == "▃▃▃▃▃" and trend["192.0.2.2:80"] == "█▆▅▃▁"
    assert model.columns[-1].title == "Trend 0-40/s"


def test_new_share_of_a_drained_dest_says_no_new_connections() -> None:
    """Item 11: no fallback to active connections; a drained dest that gets none says so."""
    busy = snapshot(service(WEB, dest(1, active=58, cps=10), dest(2, weight=0, active=42, cps=0)))
    model = vm.dests_table(busy, vm.ViewSettings(service=WEB), vm.History(), {})
    i = [c.id for c in model.columns].index("tshare")
    assert model.columns[i].title == "New%"
    assert {r.key: r.cells[i] for r in model.rows} == {"192.0.2.1:80": "100%", "192.0.2.2:80": "no new"}
    idle = snapshot(service(WEB, dest(1, active=58), dest(2, active=42)))
    model = vm.dests_table(idle, vm.ViewSettings(service=WEB), vm.History(), {})
    assert [r.cells[i] for r in model.rows] == ["-", "-"]  # no new connections: no share, not 58%/42%
