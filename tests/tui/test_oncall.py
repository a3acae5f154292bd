"""What an on-call engineer tripped on (issue 11): keys typed in one burst, kept filters, navigation."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from stage import ACTOR, ManualClock, Stage, play, settle
from textual import events
from textual.command import CommandPalette
from textual.widgets import Input, OptionList

from lvstop.model import ServiceKey
from lvstop.poller import Poller
from lvstop.sources.replay import Recorder, ReplaySource
from lvstop.tui.app import LvstopApp, make_app
from lvstop.tui.playback import Playback
from lvstop.tui.screens.confirm import ConfirmScreen
from lvstop.tui.screens.sort import SortScreen
from lvstop.tui.viewmodel import SortSpec
from lvstop.tui.widgets.director_view import DirectorView
from lvstop.tui.widgets.spans import ChunkLines, SpanLines
from lvstop.tui.writes import WriteOp

from .test_pilot import HTTPS, HTTPS_13, NTP, column, header_x, keys, open_service, table, wait_for

IMAPS = ServiceKey.tcp("203.0.113.12", 993)
_NAMES = {"/": "slash", "\r": "enter", "\x1b": "escape"}


async def burst(app: LvstopApp, pilot: object, typed: str) -> None:
    """Keys as a terminal delivers them when typed in one motion: all queued before any is handled."""
    assert app._driver is not None
    for ch in typed:
        key = _NAMES.get(ch, ch)
        char = ch if ch not in ("\x1b",) else None
        event = events.Key(key, char)
        event.set_sender(app)
        app._driver.send_message(event)
    await pilot.pause()  # type: ignore[attr-defined]
    await settle(app, pilot)  # type: ignore[arg-type]


def view(app: LvstopApp) -> DirectorView:
    return app.query_one(DirectorView)


def filter_line(app: LvstopApp) -> SpanLines:
    return app.query_one("#filter-line", SpanLines)


class TestPalette:
    async def test_ctrl_p_opens_the_palette_from_every_view(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(120, 40)) as pilot:
            await play(app, pilot, stage, 2)
            for key in ("1", "4", "3"):
                await pilot.press(key, "ctrl+p")
                await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
                await pilot.press(*"filter")
                await pilot.pause(0.3)
                assert app.is_running
                await pilot.press("escape")
                await wait_for(pilot, lambda: not isinstance(app.screen, CommandPalette))
            assert app.return_code is None


class TestBurst:
    async def test_digits_after_slash_go_to_the_filter(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(120, 40)) as pilot:
            await play(app, pilot, stage, 2)
            await burst(app, pilot, "/993")
            assert view(app).view == "services"  # `3` did not switch to the director view
            assert app.query_one("#filter", Input).value == "993"
            assert keys(table(app, "services-table")) == [str(IMAPS)]

    async def test_letters_after_slash_are_not_lost(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(120, 40)) as pilot:
            await play(app, pilot, stage, 2)
            await burst(app, pilot, "/udp")
            assert app.query_one("#filter", Input).value == "udp"
            rows = table(app, "services-table").model.rows
            assert rows and all(r.cells[0] == "UDP" for r in rows)

    async def test_enter_after_a_burst_keeps_the_filter_and_does_not_drill(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(120, 40)) as pilot:
            await play(app, pilot, stage, 2)
            await burst(app, pilot, "/443\r")
            assert view(app).view == "services"
            assert app.focused is table(app, "services-table")
            assert str(HTTPS) in keys(table(app, "services-table"))
            assert stage.poller.latest is not None
            assert len(table(app, "services-table").model.rows) < len(stage.poller.latest.services)

    async def test_a_filter_keystroke_never_starts_a_write(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(120, 40)) as pilot:
            await play(app, pilot, stage, 2)
            await open_service(app, pilot, HTTPS)
            await burst(app, pilot, "/d")
            await pilot.pause(0.3)
            assert not isinstance(app.screen, ConfirmScreen)
            assert app.query_one("#filter", Input).value == "d"


class TestKeptFilter:
    async def test_a_kept_filter_is_shown_with_n_of_m_and_escape_clears_it(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(120, 40)) as pilot:
            await play(app, pilot, stage, 2)
            services = table(app, "services-table")
            total = len(services.model.rows)
            assert not filter_line(app).display
            await burst(app, pilot, "/udp\r")
            shown = len(services.model.rows)
            assert 0 < shown < total
            line = filter_line(app)
            assert line.display and f"udp  {shown} of {total} services" in line.plain
            await pilot.press("4", "1")  # away and back: the filter is still said
            await settle(app, pilot)
            assert filter_line(app).display and "udp" in filter_line(app).plain
            await pilot.press("escape")  # the filter is closed but kept: Escape clears it
            await settle(app, pilot)
            assert len(services.model.rows) == total and not filter_line(app).display
            assert view(app).view == "services"

    async def test_a_dests_filter_shows_on_the_dests_view(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(120, 40)) as pilot:
            await play(app, pilot, stage, 2)
            await open_service(app, pilot, HTTPS)
            await burst(app, pilot, "/13\r")
            assert "1 of 3 real servers" in filter_line(app).plain
            await pilot.press("escape")
            await settle(app, pilot)
            assert len(table(app, "dests-table").model.rows) == 3 and view(app).view == "dests"


class TestQuit:
    async def test_ctrl_c_quits(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("ctrl+c")
            await pilot.pause()
            assert not app.is_running

    async def test_ctrl_c_quits_from_the_filter(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(120, 40)) as pilot:
            await burst(app, pilot, "/ab")
            await pilot.press("ctrl+c")
            await pilot.pause()
            assert not app.is_running


class TestDestToConnections:
    async def test_enter_on_a_dest_opens_its_connections_and_escape_goes_back_one_level(
        self, stage: Stage
    ) -> None:
        app = stage.app()
        async with app.run_test(size=(120, 40)) as pilot:
            await play(app, pilot, stage, 2)
            await open_service(app, pilot, HTTPS)
            assert table(app, "dests-table").select_key(str(HTTPS_13))
            await pilot.press("enter")
            await settle(app, pilot)
            v = view(app)
            assert v.view == "conns"
            assert (v.feed.conn_query.service, v.feed.conn_query.dest) == (HTTPS, HTTPS_13)
            await pilot.press("escape")
            assert v.view == "dests" and app.focused is table(app, "dests-table")
            await pilot.press("escape")
            assert v.view == "services"


class TestSysctlWords:
    async def test_the_drain_dialog_and_the_director_view_say_the_same(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(160, 60)) as pilot:
            await play(app, pilot, stage, 2)
            await open_service(app, pilot, HTTPS)
            table(app, "dests-table").select_key(str(HTTPS_13))
            await pilot.press("d")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            dialog = " ".join(str(app.screen.query_one("#confirm-text").render()).split())
            await pilot.press("escape")
            assert view(app).views is not None
            meaning = {s.name: s.meaning for s in view(app).views.director}  # type: ignore[union-attr]
            nodest = meaning["expire_nodest_conn"]
            assert f"expire_nodest_conn=0: {nodest}" in dialog
            assert "dropped" in nodest and "would not cut" not in dialog


class TestDamagedReplay:
    async def test_a_bad_line_is_named_and_the_replay_plays_past_it(
        self, tmp_path: Path, stage: Stage
    ) -> None:
        path = tmp_path / "rec.jsonl.gz"
        with Recorder(path) as rec:
            for _ in range(5):
                stage.advance()
                rec.write(stage.poller.latest)  # type: ignore[arg-type]
        lines = gzip.decompress(path.read_bytes()).decode().splitlines()
        lines[2] = lines[2][: len(lines[2]) // 2]  # line 3 cut in the middle
        path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
        clock = ManualClock()
        source = ReplaySource(path)
        poller = Poller(source, interval=3600, clock=clock, wall_clock=clock)
        playback = Playback(poller, source, 3600)
        poller.subscribe(playback.on_snapshot)
        app = make_app([poller], playbacks=[playback], resolver=lambda _a: None, clock=clock)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: source.position == 1)
            await pilot.press("space")
            await wait_for(pilot, lambda: not playback.playing and not poller.running)
            for n in range(2, 6):
                await pilot.press("full_stop")
                await wait_for(pilot, lambda n=n: source.position == n)
            assert source.finished
            await settle(app, pilot)
            view(app).refresh_status()
            header = app.query_one("#header", ChunkLines).plain
            assert "replay 5/5" in header and "1 bad line skipped" in header
            assert any(f"{path}:3:" in n.message for n in app._notifications)
            clock.now += 3600 * 10  # an hour after the end: a finished replay is not "STALE"
            view(app).refresh_status()
            assert "STALE" not in app.query_one("#header", ChunkLines).plain

    def test_a_replay_plays_at_the_pace_it_was_recorded(self, tmp_path: Path, stage: Stage) -> None:
        from lvstop.tui.app import _playback

        path = tmp_path / "rec.jsonl.gz"
        with Recorder(path) as rec:
            for _ in range(3):
                stage.clock.now += 1.0  # recorded every second, not every 2 s
                rec.write(stage.poller.poll_once())
        source = ReplaySource(path)
        poller = Poller(source, interval=2.0)
        playback = _playback(source, poller, 2.0)
        assert playback is not None and playback.cadence == 1.0 and poller.interval == 1.0


class TestEventsSayWhatHappened:
    async def test_drain_restore_set_weight_and_forced_drain_read_as_such(self, stage: Stage) -> None:
        app = stage.app()
        assert stage.writer is not None
        w = stage.writer
        async with app.run_test(size=(160, 40)) as pilot:
            await play(app, pilot, stage, 1)
            w.drain(HTTPS, HTTPS_13, expect=100, dry_run=False)
            await play(app, pilot, stage, 1)
            w.restore(HTTPS, HTTPS_13, expect=0, dry_run=False)
            await play(app, pilot, stage, 1)
            w.set_weight(HTTPS, HTTPS_13, 50, expect=100, dry_run=False)
            await play(app, pilot, stage, 1)
            first, second = (d.key for d in stage.source.read().service(NTP).dests)  # type: ignore[union-attr]
            w.drain(NTP, first, dry_run=False)
            await play(app, pilot, stage, 1)
            w.drain(NTP, second, force=True, reason="maintenance window 42", dry_run=False)
            await play(app, pilot, stage, 1)
            await pilot.press("4")
            await settle(app, pilot)
            rows = [r.cells for r in table(app, "events-table").model.rows if r.cells[4] == ACTOR]
            got = [(kind, change, details) for _t, kind, _w, change, _by, details in reversed(rows)]
            assert got == [
                ("drain", "100 → 0", ""),
                ("restore", "0 → 100", ""),
                ("set weight", "100 → 50", ""),
                ("drain", "1 → 0", ""),
                ("forced drain", "1 → 0", "reason: maintenance window 42"),
            ]


class TestSmallTerminal:
    async def test_every_part_of_the_drain_dialog_is_on_screen_at_40x12(self, stage: Stage) -> None:
        app = stage.app()
        assert stage.writer is not None
        first, second = (d.key for d in stage.source.read().service(NTP).dests)  # type: ignore[union-attr]
        stage.writer.drain(NTP, first, dry_run=False)
        async with app.run_test(size=(40, 12)) as pilot:
            await play(app, pilot, stage, 2)
            for skey, dkey, parts in (
                (HTTPS, HTTPS_13, ("#confirm-yes", "#confirm-no")),
                (NTP, second, ("#confirm-reason", "#confirm-yes", "#confirm-no")),  # the guard: a reason
            ):
                await pilot.press("1")
                await open_service(app, pilot, skey)
                assert table(app, "dests-table").select_key(str(dkey))
                await pilot.press("d")
                await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
                await pilot.pause()
                screen = app.screen.region
                for part in parts:
                    region = app.screen.query_one(part).region
                    assert screen.contains_region(region), (part, region)
                await pilot.press("escape")
                await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen))


class TestWords:
    async def test_the_recent_events_title_says_which_key_shows_all(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(120, 40)) as pilot:
            await play(app, pilot, stage, 2)
            assert "recent events  (press 4 for all)" in app.query_one("#recent-events", SpanLines).plain

    def test_the_set_weight_button_says_the_weight(self) -> None:
        op = WriteOp("set_weight", HTTPS, HTTPS_13, 100, 50)
        assert (op.verb, op.button) == ("Set weight of", "Set weight 50")
        assert WriteOp("drain", HTTPS, HTTPS_13, 100).button == "Drain"


class TestToggleFeedback:
    async def test_each_toggle_says_what_it_did(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(120, 40)) as pilot:
            await play(app, pilot, stage, 2)
            for key, said in (("n", "names: resolving"), ("n", "numeric addresses"), ("e", "exact numbers")):
                await pilot.press(key)
                await wait_for(pilot, lambda said=said: any(said in n.message for n in app._notifications))


class TestStableColumns:
    @pytest.mark.parametrize("width", [100, 120, 140])
    async def test_a_filter_does_not_make_columns_come_and_go(self, stage: Stage, width: int) -> None:
        app = stage.app()
        async with app.run_test(size=(width, 30)) as pilot:
            await play(app, pilot, stage, 2)
            services = table(app, "services-table")
            before = services.shown_columns
            for text in ("udp\r", "mark\r"):
                await burst(app, pilot, "/" + text)
                assert services.shown_columns == before, text
                await pilot.press("escape")
                await settle(app, pilot)


class TestLiveSort:
    async def test_sorting_by_live_puts_degraded_services_first(self, stage: Stage) -> None:
        app = stage.app()
        assert stage.writer is not None
        stage.writer.drain(HTTPS, HTTPS_13, expect=100, dry_run=False)  # 2/3
        async with app.run_test(size=(160, 40)) as pilot:
            await play(app, pilot, stage, 2)
            services = table(app, "services-table")
            await pilot.click("#services-table", offset=(header_x(services, "dests"), 0))
            await settle(app, pilot)
            live = [tuple(map(int, c.rstrip("?").split("/"))) for c in column(services, "dests")]
            down = [(n - up) / n for up, n in live]
            assert down == sorted(down, reverse=True) and down[0] > 0 and down[-1] == 0
            assert keys(services).index(str(HTTPS)) < len([d for d in down if d > 0])


class TestSortMenu:
    async def test_f6_picks_the_sort_column_from_a_list(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(120, 40)) as pilot:
            await play(app, pilot, stage, 2)
            shown = {k: b.binding for k, b in app.screen.active_bindings.items() if b.binding.show}
            assert shown["f6"].key_display == "F6/o"  # in the footer
            await pilot.press("f6")
            await wait_for(pilot, lambda: isinstance(app.screen, SortScreen))
            options = app.screen.query_one(OptionList)
            ids = [options.get_option_at_index(i).id for i in range(options.option_count)]
            assert "trend" not in ids and ids[options.highlighted or 0] == "cps"  # where the sort is now
            options.highlighted = ids.index("active")
            await pilot.press("enter")
            await settle(app, pilot)
            assert table(app, "services-table").model.sort == SortSpec("active", True)
            await pilot.press("4", "o")  # the events table too, by its other key
            await wait_for(pilot, lambda: isinstance(app.screen, SortScreen))
            await pilot.press("escape")
            assert view(app).feed.settings.events_sort == SortSpec("time", True)
