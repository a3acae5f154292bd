"""Health checks on screen (issue 10, "Seeing it"): the view model's cells, notes, header and events,
then the dashboard over the staged demo with its checks, and the `lvstop --health.config` wiring."""

from __future__ import annotations

import argparse
import io
import os
import signal
import time
from pathlib import Path

import pytest
from stage import Stage, play, settle
from textual.pilot import Pilot

from lvstop.cli import Environment, main
from lvstop.control import DrainRecord
from lvstop.errors import UsageError
from lvstop.events import HEALTH_DOWN, HEALTH_UP, health_event
from lvstop.health.config import parse
from lvstop.health.runner import Book, HealthView, targets
from lvstop.health.state import CheckHealth, DestHealth, ProbeResult, State, Transition, combine
from lvstop.model import DestKey, ServiceKey, ServiceRows, dest_key_bytes
from lvstop.poller import Poller
from lvstop.sources.sim import SimSource
from lvstop.tui import units
from lvstop.tui import viewmodel as vm
from lvstop.tui.app import LvstopApp, health_checks, health_runner
from lvstop.tui.screens.confirm import ConfirmScreen
from lvstop.tui.widgets.live_table import LiveTable
from lvstop.tui.widgets.spans import ChunkLines, SpanLines
from lvstop.tui.writes import LocalWriter

from .test_viewmodel import WEB, dest, service, snapshot

NOW = 1.7e9  # the test snapshots' wall time
API = ServiceKey.tcp("203.0.113.11", 8080)
DEAD = DestKey(2, "192.0.2.24", 8080)


def checked(state: State, since: float | None, ok: bool, latency: float, reason: str) -> DestHealth:
    last = ProbeResult(ok, latency, reason)
    return combine([CheckHealth("tcp", state, since, last, since)])


def cells(model: vm.TableModel, column_id: str) -> dict[str, str]:
    i = [c.id for c in model.columns].index(column_id)
    return {r.key: r.cells[i] for r in model.rows}


def tones(model: vm.TableModel, column_id: str) -> dict[str, str]:
    i = [c.id for c in model.columns].index(column_id)
    return {r.key: r.cell_tones[i] for r in model.rows}


# 1 up, 2 down with weight, 3 down and drained, 4 weight but no check, 5 neither
SNAP = snapshot(service(WEB, dest(1), dest(2), dest(3, weight=0), dest(4), dest(5, weight=0)))
HEALTH: vm.HealthMap = {
    (WEB, dest(1).key): checked(State.UP, NOW - 300, True, 0.0004, "connected"),
    (WEB, dest(2).key): checked(State.DOWN, NOW - 42, False, 2.0, "timed out after 2 s"),
    (WEB, dest(3).key): checked(State.DOWN, NOW - 3700, False, 0.0002, "connection refused"),
}


class TestCells:
    def test_without_checks_no_health_column_anywhere(self) -> None:
        """No --health.config: the tables and the header are what they were."""
        settings = vm.ViewSettings(service=WEB)
        assert vm.services_table(SNAP, settings, vm.History()).columns == vm.SERVICE_COLUMNS
        assert [c.id for c in vm.dests_table(SNAP, settings, vm.History(), {}).columns] == [
            c.id for c in vm.DEST_COLUMNS
        ]
        header = vm.header_lines(SNAP, vm.History(), settings)
        assert "health" not in "".join(t for chunk in header[2] for t, _ in chunk.spans)

    def test_dest_state_since_and_last_answer_in_words(self) -> None:
        model = vm.dests_table(SNAP, vm.ViewSettings(service=WEB), vm.History(), {}, health=HEALTH)
        ids = [c.id for c in model.columns]
        assert ids[ids.index("weight") + 1 : ids.index("weight") + 3] == ["health", "check"]
        assert cells(model, "health") == {
            "192.0.2.1:80": "up 5m00s",
            "192.0.2.2:80": "DOWN 42s",  # weight and down: upper case, not colour alone
            "192.0.2.3:80": "down 1h01m",  # drained already
            "192.0.2.4:80": "unchecked",  # weight and no check
            "192.0.2.5:80": "-",
        }
        assert tones(model, "health")["192.0.2.2:80"] == vm.BAD
        assert tones(model, "health")["192.0.2.4:80"] == vm.WARN
        assert cells(model, "check")["192.0.2.1:80"] == "0.4ms connected"
        assert cells(model, "check")["192.0.2.2:80"] == "timed out after 2 s"
        assert tones(model, "check")["192.0.2.2:80"] == vm.BAD

    def test_dests_sort_worst_health_first(self) -> None:
        settings = vm.ViewSettings(service=WEB, dests_sort=vm.SortSpec("health", False))
        model = vm.dests_table(SNAP, settings, vm.History(), {}, health=HEALTH)
        assert [r.key for r in model.rows][:3] == ["192.0.2.2:80", "192.0.2.4:80", "192.0.2.3:80"]
        by_latency = vm.dests_table(
            SNAP,
            vm.ViewSettings(service=WEB, dests_sort=vm.SortSpec("check", True)),
            vm.History(),
            {},
            health=HEALTH,
        )
        assert by_latency.rows[0].key == "192.0.2.2:80"  # the slowest answer first

    def test_filter_finds_down_dests(self) -> None:
        settings = vm.ViewSettings(service=WEB, dests_filter="down")
        model = vm.dests_table(SNAP, settings, vm.History(), {}, health=HEALTH)
        assert [r.key for r in model.rows] == ["192.0.2.2:80", "192.0.2.3:80"]

    @pytest.mark.parametrize(
        ("dests", "health", "text", "tone"),
        [
            ((1,), {1: State.UP}, "1/1", vm.GOOD),
            ((1, 2), {1: State.UP, 2: State.DOWN}, "1/2 DOWN", vm.BAD),
            ((1, 2), {1: State.UP}, "1/2 unchecked", vm.WARN),
            ((1, 2), {}, "unchecked", vm.WARN),
            ((1, 2), {1: State.UP, 2: State.UNKNOWN}, "1/2", vm.DRAINED),
        ],
    )
    def test_service_healthy_of_total(
        self, dests: tuple[int, ...], health: dict[int, State], text: str, tone: str
    ) -> None:
        snap = snapshot(service(WEB, *(dest(n) for n in dests)))
        hmap = {(WEB, dest(n).key): checked(s, NOW, s is State.UP, 0.001, "x") for n, s in health.items()}
        model = vm.services_table(snap, vm.ViewSettings(), vm.History(), health=hmap)
        assert cells(model, "health") == {str(WEB): text}
        assert tones(model, "health") == {str(WEB): tone}

    def test_a_drained_down_dest_does_not_alarm_its_service(self) -> None:
        snap = snapshot(service(WEB, dest(1), dest(2, weight=0)))
        hmap = {
            (WEB, dest(1).key): checked(State.UP, NOW, True, 0.001, "ok"),
            (WEB, dest(2).key): checked(State.DOWN, NOW, False, 0.001, "refused"),
        }
        model = vm.services_table(snap, vm.ViewSettings(), vm.History(), health=hmap)
        assert cells(model, "health") == {str(WEB): "1/2"}

    def test_services_sort_worst_first_and_an_unchecked_service_says_so(self) -> None:
        dns = ServiceKey.udp("203.0.113.10", 53)
        good = ServiceKey.tcp("203.0.113.10", 443)
        snap = snapshot(service(good, dest(7)), service(dns, dest(8)), service(WEB, dest(1), dest(2)))
        hmap = {
            (good, dest(7).key): checked(State.UP, NOW, True, 0.001, "ok"),
            (WEB, dest(1).key): checked(State.UP, NOW, True, 0.001, "ok"),
            (WEB, dest(2).key): checked(State.DOWN, NOW, False, 0.001, "refused"),
        }
        settings = vm.ViewSettings(services_sort=vm.SortSpec("health", False))
        model = vm.services_table(snap, settings, vm.History(), health=hmap)
        assert [r.cells[[c.id for c in model.columns].index("health")] for r in model.rows] == [
            "1/2 DOWN",
            "unchecked",
            "1/1",
        ]

    def test_header_counts_and_the_alarm_that_survives_a_narrow_line(self) -> None:
        lines = vm.header_lines(SNAP, vm.History(), vm.ViewSettings(), HEALTH)
        text = ["".join(t for t, _ in c.spans) for c in lines[2]]
        assert "  1 DOWN with weight" in text
        assert "  health 1 up, 2 down, 1 unchecked" in text
        narrow = ["".join(t for t, _ in c.spans) for c in vm.fit_chunks(lines[2], 40)]
        assert "  1 DOWN with weight" in narrow and not any("health" in t for t in narrow)

    def test_notes_name_the_dest_down_with_weight_and_the_unchecked(self) -> None:
        notes = vm.dest_notes(SNAP, SNAP.services[0], {}, vm.History(), health=HEALTH)
        text = ["".join(t for t, _ in n) for n in notes]
        assert text[0] == (
            "192.0.2.2:80  DOWN for 42s with weight 1: new connections still go to it (timed out after 2 s)"
        )
        assert text[1] == "1 real server has weight and no health check"
        assert not any("192.0.2.3:80  DOWN" in t for t in text)  # drained: its drain note speaks

    def test_notes_tell_a_drain_by_health_from_an_operators(self) -> None:
        drains = {
            (WEB, dest(3).key): DrainRecord(
                4, NOW - 60, "health", "health: down (tcp: connection refused)", "health"
            ),
            (WEB, dest(5).key): DrainRecord(2, NOW - 60, "alice", "kernel upgrade"),
        }
        notes = vm.dest_notes(SNAP, SNAP.services[0], drains, vm.History(), health=HEALTH)
        text = {n[0][0]: "".join(t for t, _ in n) for n in notes}
        assert text["192.0.2.3:80"].startswith(
            "192.0.2.3:80 drained by health: down (tcp: connection refused), restores to 4 when up"
        )
        assert text["192.0.2.5:80"].startswith(
            "192.0.2.5:80 drained by alice (kernel upgrade), restores to 2"
        )
        by_health = next(n for n in notes if n[0][0] == "192.0.2.3:80")
        assert (" drained by health", vm.BAD) in by_health


def test_counts_over_every_dest_make_no_rows_of_the_runners_view() -> None:
    """The services' healthy/total and the header count all dests: from HealthView.states(), without
    a DestHealth per dest each build (at 5,000 dests the rows are made only for the dests shown)."""
    checks = [CheckHealth("tcp", State.UP, NOW, None, NOW), CheckHealth("tcp", State.DOWN, NOW, None, NOW)]
    packed = [dest_key_bytes(WEB, d.family, d.address, d.port) for d in (dest(1), dest(2))]
    view = HealthView(({(WEB, dest(1).key): [0], (WEB, dest(2).key): [1]}, list(checks), packed))
    snap = snapshot(service(WEB, dest(1), dest(2)))
    model = vm.services_table(snap, vm.ViewSettings(), vm.History(), health=view)
    header = vm.header_lines(snap, vm.History(), vm.ViewSettings(), view)
    assert cells(model, "health") == {str(WEB): "1/2 DOWN"}
    assert "  1 DOWN with weight" in ["".join(t for t, _ in c.spans) for c in header[2]]
    assert view._rows == {}
    vm.dests_table(snap, vm.ViewSettings(service=WEB), vm.History(), {}, health=view)
    assert len(view._rows) == 2  # the dests view shows them: now they are made


class TestEvents:
    def transition(self, old: State, new: State) -> Transition:
        return Transition(WEB, dest(2).key, "http", old, new, "status 503", NOW)

    def test_every_transition_is_an_event_but_a_first_good_answer(self) -> None:
        assert health_event(self.transition(State.UNKNOWN, State.UP)) is None
        down = health_event(self.transition(State.UP, State.DOWN))
        first_down = health_event(self.transition(State.UNKNOWN, State.DOWN))
        up = health_event(self.transition(State.DOWN, State.UP))
        assert down is not None and first_down is not None and up is not None
        assert (down.kind, first_down.kind, up.kind) == (HEALTH_DOWN, HEALTH_DOWN, HEALTH_UP)
        assert down.message == "TCP 203.0.113.10:80 -> 192.0.2.2:80: health up -> down (http: status 503)"

    def test_events_table_shows_states_and_the_answer(self) -> None:
        down = health_event(self.transition(State.UP, State.DOWN))
        up = health_event(self.transition(State.DOWN, State.UP))
        assert down is not None and up is not None
        model = vm.events_table([down, up], vm.ViewSettings(events_sort=vm.SortSpec("kind", False)))
        rows = {r.cells[1]: r for r in model.rows}
        assert rows["health down"].cells[2:] == (
            "192.0.2.2:80 in TCP 203.0.113.10:80",
            "up → down",
            "",
            "http: status 503",
        )
        assert rows["health down"].tone == vm.BAD and rows["health up"].tone == vm.GOOD
        assert rows["health up"].cells[3] == "down → up"


def test_latency_unit() -> None:
    assert [units.latency(s) for s in (0.00042, 0.0012, 0.012, 2.0, None)] == [
        "0.4ms",
        "1.2ms",
        "12ms",
        "2s",
        "-",
    ]


async def api_dead_is_down(app: LvstopApp, pilot: Pilot[int]) -> LiveTable:
    """Enter on the API service: its 192.0.2.24 shows DOWN, timed out. The dests table."""
    app.query_one("#services-table", LiveTable).select_key(str(API))
    await pilot.press("enter")
    await settle(app, pilot)
    dests = app.query_one("#dests-table", LiveTable)
    assert cells(dests.model, "health")[str(DEAD)].startswith("DOWN ")
    assert cells(dests.model, "check")[str(DEAD)] == "timed out after 2 s"
    return dests


class TestDashboard:
    """The staged demo with the checks `lvstop --demo` runs (simulated answers, one per poll)."""

    async def test_down_with_weight_stands_out_everywhere(self) -> None:
        stage = Stage(checks=True)
        app = stage.app()
        try:
            async with app.run_test(size=(160, 40)) as pilot:
                await play(app, pilot, stage, 6)  # fall 3 at one probe a poll
                services = app.query_one("#services-table", LiveTable)
                assert cells(services.model, "health")[str(API)] == "3/4 DOWN"
                assert "DOWN with weight" in app.query_one("#header", ChunkLines).plain
                dests = await api_dead_is_down(app, pilot)
                assert "check" in dests.shown_columns and "health" in dests.shown_columns
                assert "192.0.2.24:8080  DOWN for" in app.query_one("#dest-notes", SpanLines).plain
                await pilot.press("4")
                await settle(app, pilot)
                events = app.query_one("#events-table", LiveTable)
                assert any(
                    r.cells[1] == "health down"
                    and r.cells[2] == f"{DEAD} in {API}"
                    and r.cells[5] == "tcp: timed out after 2 s"
                    for r in events.model.rows
                )
        finally:
            stage.close()

    async def test_the_dests_view_says_who_drained_each_dest(self) -> None:
        """The exporter's health actor drains through the same drain-state file the dashboard reads;
        the on-call drains another dest with `d`: the notes tell the two apart."""
        stage = Stage(checks=True)
        app = stage.app()
        other = DestKey(2, "192.0.2.21", 8080)
        try:
            async with app.run_test(size=(160, 40)) as pilot:
                await play(app, pilot, stage, 6)
                assert isinstance(stage.writer, LocalWriter)
                stage.writer.control.drain(
                    API,
                    DEAD,
                    actor="health",
                    cause="health",
                    reason="health: down (tcp: timed out after 2 s)",
                )
                services = app.query_one("#services-table", LiveTable)
                services.select_key(str(API))
                await pilot.press("enter")
                await play(app, pilot, stage, 1)
                dests = app.query_one("#dests-table", LiveTable)
                dests.select_key(str(other))
                await pilot.press("d")
                while not isinstance(app.screen, ConfirmScreen):
                    await pilot.pause(0.02)
                await pilot.press("y")
                while isinstance(app.screen, ConfirmScreen):
                    await pilot.pause(0.02)
                await play(app, pilot, stage, 1)
                notes = app.query_one("#dest-notes", SpanLines).plain
                drained = "drained by health: down (tcp: timed out after 2 s), restores to 2 when up"
                assert f"192.0.2.24:8080 {drained}" in notes
                assert "192.0.2.21:8080 drained by tui:oncall, restores to 3" in notes
                assert cells(dests.model, "weight")[str(DEAD)] == "0 →2"
        finally:
            stage.close()

    async def test_a_flapping_dest_comes_back_with_an_event(self) -> None:
        """192.0.2.13:8080 fails the first 40 s of every 5 minutes of the demo's clock."""
        stage = Stage(checks=True)
        app = stage.app()
        web13 = DestKey(2, "192.0.2.13", 8080)
        try:
            async with app.run_test(size=(160, 40)) as pilot:
                await play(app, pilot, stage, 24)  # 48 s: answers again from 40 s, rise 2
                kinds = [(e.kind, e.states) for e in stage.poller.events.recent() if e.dest == web13]
                assert kinds == [(HEALTH_DOWN, ("unknown", "down")), (HEALTH_UP, ("down", "up"))]
                services = app.query_one("#services-table", LiveTable)
                assert cells(services.model, "health")[str(WEB)] == "4/4"
        finally:
            stage.close()

    async def test_paused_tables_keep_the_health_of_the_pause(self) -> None:
        stage = Stage(checks=True)
        app = stage.app()
        try:
            async with app.run_test(size=(160, 40)) as pilot:
                await play(app, pilot, stage, 4)
                services = app.query_one("#services-table", LiveTable)
                before = cells(services.model, "health")
                await pilot.press("space")
                await play(app, pilot, stage, 20)  # the flapping dest came back meanwhile
                assert cells(services.model, "health") == before
        finally:
            stage.close()


class TestCommandLine:
    def args(self, source: str, config: str | None = None) -> argparse.Namespace:
        return argparse.Namespace(source=source, health_config=config)

    def test_only_the_demo_checks_without_a_file(self, tmp_path: Path) -> None:
        assert health_checks(self.args("netlink")) is None
        demo = health_checks(self.args("demo"))
        assert demo is not None and demo.file == "<demo checks>" and len(demo.checks) == 11
        mine = tmp_path / "checks.yaml"
        mine.write_text('checks:\n  - service: "*"\n    type: tcp\n')
        given = health_checks(self.args("demo", str(mine)))
        assert given is not None and given.file == str(mine)

    def test_every_demo_check_matches_a_demo_service(self) -> None:
        """A check whose service the demo lacks would check nothing, silently (FWM 2 is IPv6)."""
        config = health_checks(self.args("demo"))
        assert config is not None
        pairs, skipped = targets(config, SimSource(seed=1).read())
        assert {i for i, _, _ in pairs} == set(range(len(config.checks))) and skipped == []

    @pytest.mark.parametrize("source", ["replay", "remote"])
    def test_refused_where_probes_from_here_mean_nothing(self, source: str, tmp_path: Path) -> None:
        with pytest.raises(UsageError, match="probes real servers from this host"):
            health_checks(self.args(source, str(tmp_path / "checks.yaml")))

    def test_a_bad_file_exits_2_before_any_screen(self, tmp_path: Path) -> None:
        bad = tmp_path / "checks.yaml"
        bad.write_text('checks:\n  - service: "*"\n    type: tcp\n    intervall: 2s\n')
        err = io.StringIO()
        status = main(["--demo", "--health.config", str(bad)], Environment(stdout=io.StringIO(), stderr=err))
        assert status == 2
        assert f"{bad}:4" in err.getvalue() and "intervall" in err.getvalue()

    def test_runner_fed_by_the_poller_posts_transitions_as_events(self) -> None:
        """The real HealthRunner (own thread and loop) on the demo, with simulated answers."""
        config = parse(
            'checks:\n  - service: "TCP 203.0.113.11:8080"\n    type: tcp\n    interval: 50ms\n    fall: 2\n'
        )
        source = SimSource(seed=1)
        poller = Poller(source, interval=2.0)
        runner = health_runner(config, source, poller, None)
        runner.start()
        try:
            poller.poll_once()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                h = runner.view().get((API, DEAD))
                if h is not None and h.state is State.DOWN and poller.events.recent():
                    break
                time.sleep(0.02)
            assert runner.view()[(API, DEAD)].state is State.DOWN
            assert {d for (s, d), h in runner.view().items() if h.state is State.UP} == {
                DestKey(2, f"192.0.2.{n}", 8080) for n in (21, 22, 23)
            }
            events = [e for e in poller.events.recent() if e.kind.startswith("health")]
            assert [(e.kind, e.dest, e.reason) for e in events] == [
                (HEALTH_DOWN, DEAD, "tcp: timed out after 2 s")
            ]
        finally:
            runner.stop()
            source.close()


def test_the_checks_process_ending_is_an_event_and_so_is_its_new_start() -> None:
    """Off the demo the probes run in a process of their own; when it dies the events say so, and
    again when a new one runs. The check matches no dest of this director: no probe is sent."""

    class Director(SimSource):
        name = "netlink"  # not the demo's simulated answers: real probes, in the checks' process

    source = Director(seed=1)
    poller = Poller(source, interval=2.0)
    runner = health_runner(
        parse('checks:\n  - {service: "TCP 127.0.0.1:9", type: tcp}\n'), source, poller, None
    )
    runner.start()
    try:
        assert runner._child is not None
        os.kill(runner._child.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while len(poller.events.recent()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        events = [(e.kind, e.message) for e in poller.events.recent()]
    finally:
        runner.stop()
        source.close()
    assert events[0][0] == HEALTH_DOWN and "ended (killed by SIGKILL)" in events[0][1]
    assert events[1] == (HEALTH_UP, "health checks: their process started again")


def test_record_refuses_a_health_config_it_would_ignore(tmp_path: Path) -> None:
    err = io.StringIO()
    argv = ["--health.config", str(tmp_path / "c.yaml"), "record", "--demo", str(tmp_path / "r.gz")]
    assert main(argv, Environment(stdout=io.StringIO(), stderr=err)) == 2
    assert "not `record`" in err.getvalue() and not (tmp_path / "r.gz").exists()


def test_counts_are_made_from_the_dest_columns_without_a_dest_row() -> None:
    """healthy/total per service and the header's counts come from the snapshot's dest key and weight
    columns: no service's row with its dests is made for them (Snapshot.services builds those)."""
    source = SimSource(services=3, dests_per_service=2)
    book = Book()
    book.set_targets(targets(parse("checks:\n  - {service: '*', type: tcp}\n"), source.read())[0])
    snap = source.read()  # the next poll's, whose rows nobody has read
    table = snap.table
    first = table.services[0].key
    book.record((s, g, ProbeResult(t.service != first, 0.001, "x")) for s, g, _, t in book.live())
    rows = snap.services
    assert isinstance(rows, ServiceRows) and rows._rows == [None] * 3
    model = vm.services_table(snap, vm.ViewSettings(), vm.History(), health=HealthView(book.table()))
    header = vm.header_lines(snap, vm.History(), vm.ViewSettings(), HealthView(book.table()))
    assert rows._rows == [None] * 3
    assert cells(model, "health") == {
        str(table.services[0].key): "0/2",  # one failure: unknown yet (fall 3)
        str(table.services[1].key): "2/2",
        str(table.services[2].key): "2/2",
    }
    assert "  health 4 up, 2 unknown" in ["".join(t for t, _ in c.spans) for c in header[2]]
