"""The dashboard driven by keys and clicks (Textual's Pilot) over the seeded demo director."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
from stage import ACTOR, Stage, play, settle
from textual.message import Message
from textual.widgets import Button

from lvstop.errors import SourceError
from lvstop.model import DestKey, ServiceKey
from lvstop.tui.app import LvstopApp
from lvstop.tui.bindings import KEYS, palette_title
from lvstop.tui.screens.confirm import ConfirmScreen
from lvstop.tui.screens.help import HelpScreen, help_table
from lvstop.tui.viewmodel import SortSpec
from lvstop.tui.widgets.director_view import DirectorView
from lvstop.tui.widgets.live_table import LiveTable
from lvstop.tui.widgets.spans import ChunkLines, SpanLines

from .conftest import FlakySource

HTTPS = ServiceKey.tcp("203.0.113.10", 443)
WEB = ServiceKey.tcp("203.0.113.10", 80)
NTP = ServiceKey.udp("203.0.113.15", 123)
HTTPS_13 = DestKey(2, "192.0.2.13", 8443)


def table(app: LvstopApp, name: str) -> LiveTable:
    return app.query_one(f"#{name}", LiveTable)


def column(t: LiveTable, column_id: str) -> list[str]:
    i = [c.id for c in t.model.columns].index(column_id)
    return [r.cells[i] for r in t.model.rows]


def header_x(t: LiveTable, column_id: str) -> int:
    """Where to click on the header of a shown column."""
    i = [c.id for c in t.model.columns].index(column_id)
    return next(x for ci, x, _w in t._columns if ci == i) + 1


def keys(t: LiveTable) -> list[str]:
    return [r.key for r in t.model.rows]


async def open_service(app: LvstopApp, pilot: object, skey: ServiceKey) -> None:
    assert table(app, "services-table").select_key(str(skey))
    await pilot.press("enter")  # type: ignore[attr-defined]
    await settle(app, pilot)  # type: ignore[arg-type]


class TestTables:
    async def test_services_sort_by_raw_numbers_not_by_text(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(160, 40)) as pilot:
            await play(app, pilot, stage, 3)
            services = table(app, "services-table")
            assert services.model.sort is not None and services.model.sort.column == "cps"
            # Active counts print as 1.4k, 926, 97...: the order must follow the numbers behind them.
            await pilot.click("#services-table", offset=(header_x(services, "active"), 0))
            await settle(app, pilot)
            model = services.model
            assert model.sort is not None and (model.sort.column, model.sort.reverse) == ("active", True)
            snap = stage.poller.latest
            assert snap is not None
            active = {str(s.key): sum(d.active_conns for d in s.dests) for s in snap.services}
            ordered = [active[k] for k in keys(services)]
            assert ordered == sorted(ordered, reverse=True)
            assert column(services, "active") != sorted(column(services, "active"), reverse=True)
            await pilot.click("#services-table", offset=(header_x(services, "active"), 0))  # again: ascending
            await settle(app, pilot)
            assert [active[k] for k in keys(services)] == sorted(ordered)
            await pilot.press("s")  # the next column, busiest first
            await settle(app, pilot)
            assert services.model.sort == SortSpec("inactive", True)

    async def test_cursor_follows_its_row_when_the_order_changes(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(120, 40)) as pilot:
            await play(app, pilot, stage, 3)
            services = table(app, "services-table")
            await pilot.press("down", "down")
            chosen = services.cursor_key
            await pilot.press("S")  # reverse the order: the row moves, the cursor goes with it
            await settle(app, pilot)
            assert services.cursor_key == chosen
            assert chosen is not None and services.cursor_row == keys(services).index(chosen)

    async def test_filter_narrows_and_escape_clears(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(120, 40)) as pilot:
            await play(app, pilot, stage, 2)
            services = table(app, "services-table")
            everything = len(services.model.rows)
            await pilot.press("slash", *"192.0.2.13")  # a dest address finds the services it serves
            await settle(app, pilot)
            assert set(keys(services)) == {str(WEB), str(HTTPS)}
            assert services.model.total == everything
            await pilot.press("enter")  # keeps the filter, back to the table
            assert app.focused is services
            assert len(services.model.rows) == 2
            await pilot.press("slash", "escape")  # escape in the filter empties it
            await settle(app, pilot)
            assert len(services.model.rows) == everything

    async def test_drill_down_and_back(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(120, 40)) as pilot:
            await play(app, pilot, stage, 2)
            await open_service(app, pilot, HTTPS)
            view = app.query_one(DirectorView)
            assert view.view == "dests"
            dests = table(app, "dests-table")
            assert keys(dests) == ["192.0.2.11:8443", "192.0.2.12:8443", "192.0.2.13:8443"]
            assert "TCP 203.0.113.10:443" in app.query_one("#dests-summary", SpanLines).plain
            await pilot.press("escape")
            assert view.view == "services"
            assert app.focused is table(app, "services-table")


class TestDrain:
    async def test_drain_confirm_apply_and_follow(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(120, 40)) as pilot:
            await play(app, pilot, stage, 3)
            await open_service(app, pilot, HTTPS)
            assert table(app, "dests-table").select_key(str(HTTPS_13))
            await pilot.press("d")
            await settle_screen(pilot, ConfirmScreen)
            text = str(app.screen.query_one("#confirm-text").render())
            assert "Drain 192.0.2.13:8443" in text
            assert "weight 100 → 0" in text
            assert "service live weight 300 → 200 on 2 of 3 dests (last poll)" in text
            assert "expire_quiescent_template=0" in text  # Control's warning for a persistent service
            await pilot.press("y")
            await wait_for(pilot, lambda: stage.source.get_dest(HTTPS, HTTPS_13).weight == 0)  # type: ignore[union-attr]
            await play(app, pilot, stage, 1)
            dests = table(app, "dests-table")
            assert column(dests, "weight")[keys(dests).index(str(HTTPS_13))] == "0 →100"
            notes = app.query_one("#dest-notes", SpanLines).plain
            assert f"192.0.2.13:8443 drained by {ACTOR}, restores to 100" in notes
            assert "persistence templates keep sending returning clients" in notes
            events = [e for e in stage.poller.events.recent(10) if e.kind == "weight_changed"]
            assert [(e.old, e.new, e.actor) for e in events] == [(100, 0, ACTOR)]

            await pilot.press("u")  # restore: the remembered weight comes back
            await settle_screen(pilot, ConfirmScreen)
            assert "weight 0 → 100" in str(app.screen.query_one("#confirm-text").render())
            await pilot.press("y")
            await wait_for(pilot, lambda: stage.source.get_dest(HTTPS, HTTPS_13).weight == 100)  # type: ignore[union-attr]

    async def test_a_corrupt_drain_state_is_reported_and_the_app_keeps_running(self, stage: Stage) -> None:
        app = stage.app()
        Path(stage._dir.name, "drains.json").write_text("{not json")
        async with app.run_test(size=(120, 40)) as pilot:
            await play(app, pilot, stage, 2)
            await open_service(app, pilot, HTTPS)
            table(app, "dests-table").select_key(str(HTTPS_13))
            await pilot.press("u")  # restore needs the drain state: unreadable
            await wait_for(
                pilot, lambda: any("unreadable drain state" in n.message for n in app._notifications)
            )
            assert app.is_running and not isinstance(app.screen, ConfirmScreen)
            assert stage.source.get_dest(HTTPS, HTTPS_13).weight == 100  # type: ignore[union-attr]

    async def test_cancel_changes_nothing(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(120, 40)) as pilot:
            await play(app, pilot, stage, 2)
            await open_service(app, pilot, HTTPS)
            table(app, "dests-table").select_key(str(HTTPS_13))
            await pilot.press("d")
            await settle_screen(pilot, ConfirmScreen)
            await pilot.press("n")
            await pilot.pause()
            assert not isinstance(app.screen, ConfirmScreen)
            assert stage.source.get_dest(HTTPS, HTTPS_13).weight == 100  # type: ignore[union-attr]

    async def test_last_live_weight_needs_force_and_a_reason(self, stage: Stage) -> None:
        app = stage.app()
        assert stage.writer is not None
        first, second = (d.key for d in stage.source.read().service(NTP).dests)  # type: ignore[union-attr]
        stage.writer.drain(NTP, first, dry_run=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await play(app, pilot, stage, 2)
            await open_service(app, pilot, NTP)
            table(app, "dests-table").select_key(str(second))
            await pilot.press("d")
            await settle_screen(pilot, ConfirmScreen)
            screen = app.screen
            text = str(screen.query_one("#confirm-text").render())
            assert "refused: this takes the last live weight" in text
            force = screen.query_one("#confirm-yes", Button)
            assert force.disabled and str(force.label) == "Force drain"
            await pilot.press("y")  # no reason yet: nothing happens
            await pilot.pause()
            assert stage.source.get_dest(NTP, second).weight == 1  # type: ignore[union-attr]
            await pilot.press(*"maintenance window 42")
            assert not force.disabled
            await pilot.press("enter")
            await wait_for(pilot, lambda: stage.source.get_dest(NTP, second).weight == 0)

    async def test_a_stale_weight_is_refused(self, stage: Stage) -> None:
        """Compare-and-set: the user saw weight 100; someone changed it before the confirmation."""
        app = stage.app()
        async with app.run_test(size=(120, 40)) as pilot:
            await play(app, pilot, stage, 2)
            await pilot.press("space")  # paused: the table keeps showing 100
            await open_service(app, pilot, HTTPS)
            d = stage.source.get_dest(HTTPS, HTTPS_13)
            assert d is not None
            stage.source.set_dest(HTTPS, dataclasses.replace(d, weight=40))
            await play(app, pilot, stage, 1)
            table(app, "dests-table").select_key(str(HTTPS_13))
            await pilot.press("d")
            await settle_screen(pilot, ConfirmScreen)
            text = str(app.screen.query_one("#confirm-text").render())
            assert "cannot do this" in text and "not 100 as expected" in text
            assert not app.screen.query("#confirm-yes")
            assert stage.source.get_dest(HTTPS, HTTPS_13).weight == 40  # type: ignore[union-attr]


class TestLive:
    async def test_pause_freezes_tables_but_not_the_header(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(120, 40)) as pilot:
            await play(app, pilot, stage, 3)
            view = app.query_one(DirectorView)
            await pilot.press("space")
            frozen = table(app, "services-table").model
            assert "PAUSED" in app.query_one("#header", ChunkLines).plain
            await play(app, pilot, stage, 3)
            assert view.views is not None and view.views.live is not None
            assert view.views.live.seq == stage.poller.latest.seq  # type: ignore[union-attr]
            assert view.views.shown is not None and view.views.shown.seq < view.views.live.seq
            assert table(app, "services-table").model.rows == frozen.rows
            await pilot.press("space")
            await settle(app, pilot)
            assert table(app, "services-table").model.rows != frozen.rows
            assert "PAUSED" not in app.query_one("#header", ChunkLines).plain

    async def test_failing_source_banner_and_last_good_data(self) -> None:
        stage = Stage(source_class=FlakySource)
        app = stage.app()
        async with app.run_test(size=(120, 40)) as pilot:
            await play(app, pilot, stage, 3)
            before = table(app, "services-table").model.rows
            stage.source.failing = "netlink: Operation not permitted"  # type: ignore[attr-defined]
            with pytest.raises(SourceError):
                stage.advance()
            app.query_one(DirectorView).refresh_status()
            await settle(app, pilot)
            banner = app.query_one("#banner", SpanLines)
            assert banner.display and "source failing: netlink: Operation not permitted" in banner.plain
            assert "showing the last good data" in banner.plain
            assert "POLL FAILING" in app.query_one("#header", ChunkLines).plain
            assert table(app, "services-table").model.rows == before
            stage.source.failing = None  # type: ignore[attr-defined]
            await play(app, pilot, stage, 1)
            assert not app.query_one("#banner", SpanLines).display
        stage.close()

    async def test_toggles_exact_rates_and_names_resolved_off_the_ui_thread(self, stage: Stage) -> None:
        threads: list[int] = []

        def resolver(address: str) -> str | None:
            threads.append(threading.get_ident())
            return f"rs{address.rsplit('.', 1)[-1]}" if address.startswith("192.0.2.") else None

        app = stage.app(resolver=resolver)
        async with app.run_test(size=(160, 40)) as pilot:
            await play(app, pilot, stage, 3)
            services = table(app, "services-table")
            human = column(services, "conns")
            await pilot.press("e")
            await settle(app, pilot)
            exact = column(services, "conns")
            assert any(c.endswith(("k", "M")) for c in human)
            assert all(c.replace(",", "").isdigit() for c in exact)
            assert "instant rates" not in app.query_one("#header", ChunkLines).plain
            await pilot.press("r")
            await settle(app, pilot)
            assert "instant rates" in app.query_one("#header", ChunkLines).plain
            await open_service(app, pilot, HTTPS)
            await pilot.press("n")
            await wait_for(pilot, lambda: "rs13:8443" in keys_text(table(app, "dests-table")))
            assert threads and threading.get_ident() not in threads

    async def test_interval_keys_change_the_pollers_cadence(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("plus")
            assert stage.poller.interval == 4.0
            await pilot.press("minus", "minus")
            assert stage.poller.interval == 1.0


class TestKeysTable:
    async def test_help_and_palette_come_from_the_one_table(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(120, 60)) as pilot:
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            text = " ".join(_plain(help_table()).split())
            for k in KEYS:
                assert f"{k.display} {k.help}" in text
            await pilot.press("escape")
            titles = [c.title for c in app.get_system_commands(app.screen)]
            assert titles == [palette_title(k) for k in KEYS if k.palette]
            assert all(": " in t for t in titles)
        ids = [k.id for k in KEYS]
        assert len(ids) == len(set(ids)) and all(i == i.lower() and " " not in i for i in ids)

    async def test_messages_are_past_tense_and_coalesced(self, stage: Stage) -> None:
        seen: list[Message] = []
        app = stage.app()
        async with app.run_test(size=(120, 40), message_hook=seen.append) as pilot:
            await pilot.pause()
            for _ in range(10):  # ten polls before the UI gets a turn: at most a couple of updates
                stage.advance()
            await settle(app, pilot)
        built = [m for m in seen if isinstance(m, DirectorView.ViewsBuilt)]
        assert 1 <= len(built) <= 3
        mine = {type(m).__name__ for m in seen if type(m).__module__.startswith("lvstop.")}
        assert mine and all(
            name.endswith(("Built", "Applied", "Highlighted", "Chosen", "Clicked", "Previewed", "Finished"))
            for name in mine
        )


class TestSizes:
    @pytest.mark.parametrize("size", [(1, 1), (10, 3), (40, 12), (80, 24), (200, 60)])
    async def test_any_size_and_resizing(self, stage: Stage, size: tuple[int, int]) -> None:
        app = stage.app()
        async with app.run_test(size=size) as pilot:
            await play(app, pilot, stage, 2)
            for w, h in ((1, 1), (300, 5), (40, 12), size):
                await pilot.resize_terminal(w, h)
                await pilot.pause()
            await pilot.press("enter", "2", "3", "4", "question_mark", "escape", "1")
            await settle(app, pilot)
            assert app.is_running

    async def test_narrow_tables_keep_the_important_columns(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(40, 12)) as pilot:
            await play(app, pilot, stage, 2)
            shown = table(app, "services-table").shown_columns
            assert "service" in shown and "cps" in shown and "outpps" not in shown
            assert app.has_class("narrow") and app.has_class("short")


def test_no_color_keeps_the_meaning_in_the_text(stage: Stage, monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_COLOR: Textual renders in monochrome; drained, failing and paused still read as words."""
    import asyncio

    monkeypatch.setenv("NO_COLOR", "1")
    app = stage.app()
    assert app.no_color

    async def run() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await play(app, pilot, stage, 2)
            await open_service(app, pilot, ServiceKey.tcp("203.0.113.12", 993))
            assert "0" in column(table(app, "dests-table"), "weight")
            assert "weight 0" in app.query_one("#dest-notes", SpanLines).plain

    asyncio.run(run())


# --- helpers -------------------------------------------------------------------------------------------


async def settle_screen(pilot: object, screen_type: type) -> None:
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, screen_type))  # type: ignore[attr-defined]
    await pilot.pause()  # type: ignore[attr-defined]


async def wait_for(pilot: object, check: object, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await pilot.pause(0.02)  # type: ignore[attr-defined]


def keys_text(t: LiveTable) -> str:
    return " ".join(" ".join(r.cells) for r in t.model.rows)


def _plain(renderable: object) -> str:
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


class TestReplayKeys:
    async def test_space_pauses_dot_steps_brackets_change_speed(self, tmp_path: object, stage: Stage) -> None:
        from pathlib import Path

        from stage import ManualClock

        from lvstop.poller import Poller
        from lvstop.sources.replay import Recorder, ReplaySource
        from lvstop.tui.app import make_app
        from lvstop.tui.playback import Playback

        path = Path(str(tmp_path)) / "rec.jsonl.gz"
        with Recorder(path) as rec:
            for _ in range(5):
                stage.advance()
                rec.write(stage.poller.latest)  # type: ignore[arg-type]
        clock = ManualClock()
        source = ReplaySource(path)
        poller = Poller(source, interval=3600, clock=clock, wall_clock=clock)  # one read, then a long wait
        playback = Playback(poller, source, 3600)
        poller.subscribe(playback.on_snapshot)
        app = make_app([poller], playbacks=[playback], resolver=lambda _a: None, clock=clock)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: source.position == 1)
            await pilot.press("space")
            await wait_for(pilot, lambda: not playback.playing and not poller.running)
            assert "replay 1/5 at 1x, paused" in app.query_one("#header", ChunkLines).plain
            await pilot.press("full_stop", "full_stop")
            await wait_for(pilot, lambda: source.position == 3)
            await pilot.press("right_square_bracket")
            assert playback.speed == 2 and poller.interval == 1800
            await settle(app, pilot)
            assert "replay 3/5 at 2x, paused" in app.query_one("#header", ChunkLines).plain
            assert len(table(app, "services-table").model.rows) == 14
