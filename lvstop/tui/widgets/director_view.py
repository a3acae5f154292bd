"""Everything about one director: header, banner, and the services / dests / connections / director /
events views, with the keys that act on them. The app shows one of these, or one per --connect tab.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import ContentSwitcher, Input, Static

from lvstop.errors import LvstopError
from lvstop.events import Event
from lvstop.model import DestKey, ServiceKey
from lvstop.tui import units
from lvstop.tui import viewmodel as vm
from lvstop.tui.bindings import bindings
from lvstop.tui.feed import DirectorFeed, Views
from lvstop.tui.screens.confirm import Answer, ConfirmScreen
from lvstop.tui.screens.sort import SortScreen
from lvstop.tui.screens.weight import WeightScreen
from lvstop.tui.widgets.live_table import LiveTable
from lvstop.tui.widgets.spans import ChunkLines, SpanLines
from lvstop.tui.writes import Preview, WriteOp, preview

VIEWS = ("services", "dests", "conns", "director", "events")
TABLE_OF_VIEW = {
    "services": "services-table",
    "dests": "dests-table",
    "conns": "conns-entries",
    "events": "events-table",
}
SORT_SETTING = {"services": "services_sort", "dests": "dests_sort", "events": "events_sort"}
FILTER_SETTING = {"services": "services_filter", "dests": "dests_filter", "events": "events_filter"}
ROWS_NOUN = {"services": "services", "dests": "real servers", "events": "events"}
MIN_INTERVAL, MAX_INTERVAL = 0.5, 60.0
FLIPPED = {  # setting -> (what off means, what on means), said when a key flips it
    "names": ("numeric addresses", "names: resolving addresses in the background"),
    "human": ("exact numbers", "human units (1.2k, 34 MB)"),
    "instant": ("smoothed rates: the kernel's 2 s average", "instant rates: over the last poll"),
}


class DirectorView(Vertical):
    BINDINGS: ClassVar[list[BindingType]] = bindings("director")

    class ViewsBuilt(Message, bubble=False):
        """The feed has new views; carries nothing because the feed keeps only the newest (coalescing)."""

    class Applied(Message):
        """New views are on screen (the app refreshes what spans several directors)."""

    class WritePreviewed(Message, bubble=False):
        def __init__(self, preview: Preview) -> None:
            super().__init__()
            self.preview = preview

    class WriteFinished(Message, bubble=False):
        def __init__(self, op: WriteOp, outcome: str | None, error: str | None) -> None:
            super().__init__()
            self.op = op
            self.outcome = outcome
            self.error = error

    def __init__(self, feed: DirectorFeed, *, autostart: bool = True, id: str | None = None) -> None:
        super().__init__(id=id, classes="director")
        self.feed = feed
        self.autostart = autostart
        self.view = "services"
        self.back_to = "services"  # where Escape goes back to: one level up, not always the services
        self.views: Views | None = None
        self._newest_event: Event | None = None

    def compose(self) -> ComposeResult:
        yield ChunkLines(id="header")
        yield SpanLines(id="banner")
        yield SpanLines(id="filter-line")  # a kept filter, so a short table never passes for all of it
        with ContentSwitcher(initial="services-view", id="views"):
            with Vertical(id="services-view"):
                yield LiveTable(id="services-table")
                yield SpanLines(id="recent-events")
            with Vertical(id="dests-view"):
                yield SpanLines(id="dests-summary")
                yield SpanLines(id="dest-notes")  # above the table: it stays next to the summary
                yield LiveTable(id="dests-table")
            with Vertical(id="conns-view"):
                yield SpanLines(id="conns-line")
                with Horizontal(id="conns-aggregates"):
                    yield LiveTable(id="conns-states")
                    yield LiveTable(id="conns-dests")
                    yield LiveTable(id="conns-clients")
                yield LiveTable(id="conns-entries")
            with VerticalScroll(id="director-view"):
                yield Static(id="director-info")
            with Vertical(id="events-view"):
                yield LiveTable(id="events-table")
        yield Input(placeholder="filter: text in any column; Enter keeps it, Escape clears", id="filter")

    def on_mount(self) -> None:
        self.feed.start(self._views_built, poll=self.autostart)
        self.set_interval(1.0, self.refresh_status)
        self.refresh_status()

    def focus_view(self) -> None:
        """Something inside this view must hold the focus, or its keys would not reach it."""
        self.query_one(f"#{TABLE_OF_VIEW.get(self.view, 'director-view')}").focus()

    def _views_built(self) -> None:
        """Called on the feed's builder thread; post_message is thread-safe."""
        self.post_message(self.ViewsBuilt())

    def on_unmount(self) -> None:
        self.feed.stop()

    # --- applying views (UI thread; must stay cheap) ------------------------------------------------

    def on_director_view_views_built(self, _msg: ViewsBuilt) -> None:
        views = self.feed.take()
        if views is not None:
            self.apply(views)

    def apply(self, views: Views) -> None:
        old, self.views = self.views, views
        self.query_one("#services-table", LiveTable).set_model(views.services)
        self.query_one("#dests-table", LiveTable).set_model(views.dests)
        self.query_one("#events-table", LiveTable).set_model(views.events)
        self.query_one("#dests-summary", SpanLines).set_lines([views.summary])
        notes = self.query_one("#dest-notes", SpanLines)
        notes.set_lines(views.dest_notes)
        if notes.display != bool(views.dest_notes):  # setting it relayouts the screen, even unchanged
            notes.display = bool(views.dest_notes)
        title: tuple[vm.Span, ...] = (("recent events", vm.ACCENT), ("  (press 4 for all)", vm.DIM))
        recent = views.recent or ((("none yet: services, dests and weights that change show here", vm.DIM),),)
        self.query_one("#recent-events", SpanLines).set_lines([title, *recent])
        if old is None or old.director != views.director:  # Static.update relayouts: only on change
            self.query_one("#director-info", Static).update(director_table(views.director))
        if views.conns is not None:
            c = views.conns
            self.query_one("#conns-line", SpanLines).set_lines([c.line])
            for name, model in (
                ("states", c.states),
                ("dests", c.dests),
                ("clients", c.clients),
                ("entries", c.entries),
            ):
                self.query_one(f"#conns-{name}", LiveTable).set_model(model)
        self.refresh_status()
        self._show_filter_line()
        if old is not None and old is not views:
            self.feed.retire(old)
        self.post_message(self.Applied())

    def refresh_status(self) -> None:
        """Every second and on each build: the live end of the header and the failure banner."""
        feed = self.feed
        health = feed.health()
        newest = feed.recent_events(1)
        if (newest[-1] if newest else None) is not self._newest_event:
            # A failed poll publishes no snapshot, but its event belongs on the screen now.
            self._newest_event = newest[-1]
            feed.request()
        header = (
            self.views.header
            if self.views is not None
            else vm.header_lines(None, feed.history, feed.settings)
        )
        live = feed.playback is None or feed.playback.playing
        status = vm.status_chunks(health, feed.settings, paused=feed.paused, mode=self.mode, live=live)
        lines = [header[0] + status, *header[1:]]
        self.query_one("#header", ChunkLines).set_chunks(lines)
        banner: list[tuple[vm.Span, ...]] = []
        if health.last_error is not None:
            age = (
                "no data yet"
                if health.age is None
                else f"showing the last good data, {units.duration(health.age)} old"
            )
            banner.append(((f" source failing: {health.last_error}", vm.BAD), (f"  ({age})", vm.WARN)))
        if feed.build_error is not None:
            banner.append(((f" cannot build the view (a bug in lvstop): {feed.build_error}", vm.BAD),))
        if feed.drains_error is not None:
            banner.append(((f" drain state unreadable: {feed.drains_error}", vm.WARN),))
        self.query_one("#banner", SpanLines).set_lines(banner)
        self.set_class(bool(banner), "-failing")

    @property
    def mode(self) -> str:
        return self.feed.playback.label if self.feed.playback is not None else ""

    # --- views and navigation --------------------------------------------------------------------

    def action_show(self, view: str, query: vm.ConnQuery | None = None) -> None:
        if view == "conns" and (self.view != "conns" or query is not None):
            # Scope: the dest chosen, the service drilled into, or the whole table from elsewhere.
            service = self.feed.settings.service if self.view == "dests" else None
            self.feed.set_conn_query(query or vm.ConnQuery(service=service))
        if view != self.view:
            self.back_to = "dests" if (view, self.view) == ("conns", "dests") else "services"
        self.feed.watch_conns(view == "conns")
        self.view = view
        self.query_one("#views", ContentSwitcher).current = f"{view}-view"
        self._close_filter()
        self.focus_view()
        self.refresh_bindings()
        self._show_filter_line()

    def action_back(self) -> None:
        """Escape: closes and clears the filter if one is kept here, else goes back one level."""
        filt = self.query_one("#filter", Input)
        opened = filt.has_class("-open")
        if opened or self._filter_text():
            filt.value = ""
            self._set_filter("")
            self._close_filter()
            return
        if self.view != "services":
            self.action_show(self.back_to)

    def _filter_text(self) -> str:
        if self.view in FILTER_SETTING:
            return str(getattr(self.feed.settings, FILTER_SETTING[self.view]))
        if self.view == "conns":
            q = self.feed.conn_query
            return " ".join(x for x in (q.client, q.state, q.protocol) if x)
        return ""

    def _set_filter(self, text: str) -> None:
        if self.view in FILTER_SETTING:
            self.feed.update(**{FILTER_SETTING[self.view]: text})
        elif self.view == "conns":
            self.feed.set_conn_query(vm.parse_conn_filter(text, self.feed.conn_query))
        self._show_filter_line()

    def _show_filter_line(self) -> None:
        """The kept filter of the view in sight, with how many rows it lets through."""
        line = self.query_one("#filter-line", SpanLines)
        text = self._filter_text() if not self.query_one("#filter", Input).has_class("-open") else ""
        table = self._table()
        counts = (len(table.model.rows), table.model.total) if table and self.view in ROWS_NOUN else None
        spans = vm.filter_line(text, counts, ROWS_NOUN.get(self.view, "")) if text else ()
        line.set_lines([spans] if spans else [])
        if line.display != bool(spans):
            line.display = bool(spans)

    @on(LiveTable.RowChosen, "#services-table")
    def _drill(self, event: LiveTable.RowChosen) -> None:
        if self.views is None:
            return
        key = self.views.service_keys.get(event.key)
        if key is not None:
            self.feed.update(service=key, dests_filter="")
            self.action_show("dests")

    @on(LiveTable.RowChosen, "#dests-table")
    def _dest_conns(self, event: LiveTable.RowChosen) -> None:
        skey = self.feed.settings.service
        dkey = self.views.dest_keys.get(event.key) if self.views is not None else None
        if skey is not None and dkey is not None:
            self.action_show("conns", vm.ConnQuery(service=skey, dest=dkey))

    @on(LiveTable.RowChosen, "#conns-dests")
    def _narrow_to_dest(self, event: LiveTable.RowChosen) -> None:
        q, keys = self.feed.conn_query, self.views.conns.dest_keys if self.views and self.views.conns else {}
        if event.key in keys:
            skey, dkey = keys[event.key]
            same = q.dest == dkey and q.service == skey
            self.feed.set_conn_query(replace(q, service=None if same else skey, dest=None if same else dkey))

    @on(LiveTable.RowChosen, "#conns-states")
    def _narrow_to_state(self, event: LiveTable.RowChosen) -> None:
        q = self.feed.conn_query
        if event.key != "templates":
            self.feed.set_conn_query(replace(q, state="" if q.state == event.key else event.key))

    @on(LiveTable.RowChosen, "#conns-clients")
    def _narrow_to_client(self, event: LiveTable.RowChosen) -> None:
        q = self.feed.conn_query
        self.feed.set_conn_query(replace(q, client="" if q.client == event.key else event.key))

    @on(LiveTable.HeaderClicked)
    def _header_clicked(self, event: LiveTable.HeaderClicked) -> None:
        view = next((v for v, t in TABLE_OF_VIEW.items() if t == event.table.id), None)
        if view is not None:
            setting = SORT_SETTING[view]
            self.feed.update(**{setting: getattr(self.feed.settings, setting).toggled(event.column)})

    def action_sort(self, step: int) -> None:
        table = self._table()
        if table is None:
            return
        setting = SORT_SETTING[self.view]
        current: vm.SortSpec = getattr(self.feed.settings, setting)
        cols = [c for c in table.model.columns if c.sortable and c.id in table.shown_columns]
        if not cols:
            return
        ids = [c.id for c in cols]
        nxt = cols[(ids.index(current.column) + step) % len(cols)] if current.column in ids else cols[0]
        self.feed.update(**{setting: vm.SortSpec(nxt.id, nxt.numeric)})

    def action_sort_menu(self) -> None:
        table = self._table()
        if table is None or self.view not in SORT_SETTING:
            return
        setting = SORT_SETTING[self.view]
        current: vm.SortSpec = getattr(self.feed.settings, setting)

        def chosen(column_id: str | None) -> None:
            col = table.model.column(column_id) if column_id is not None else None
            if col is not None:
                self.feed.update(**{setting: getattr(self.feed.settings, setting).toggled(col)})

        self.app.push_screen(SortScreen(table.model.columns, current), chosen)

    def action_sort_reverse(self) -> None:
        if self.view in SORT_SETTING:
            setting = SORT_SETTING[self.view]
            current: vm.SortSpec = getattr(self.feed.settings, setting)
            self.feed.update(**{setting: vm.SortSpec(current.column, not current.reverse)})

    def _table(self) -> LiveTable | None:
        name = TABLE_OF_VIEW.get(self.view)
        return self.query_one(f"#{name}", LiveTable) if name else None

    # --- filter ----------------------------------------------------------------------------------

    def action_filter(self) -> None:
        if self.view not in FILTER_SETTING and self.view != "conns":
            return
        filt = self.query_one("#filter", Input)
        if self.view == "conns":
            q = self.feed.conn_query
            filt.value = " ".join(x for x in (q.client, q.state, q.protocol) if x)
        else:
            filt.value = getattr(self.feed.settings, FILTER_SETTING[self.view])
        filt.add_class("-open")
        # At once, not on the next turn of the loop as focus() does: the app forwards the keys typed
        # right after `/` to whatever has the focus as each arrives (`/993` or `/d` in one burst).
        self.screen.set_focus(filt)
        self._show_filter_line()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        if self.view in FILTER_SETTING and event.input.has_class("-open"):
            self.feed.update(**{FILTER_SETTING[self.view]: event.value})
        self._show_filter_line()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if self.view == "conns":
            try:
                self.feed.set_conn_query(vm.parse_conn_filter(event.value, self.feed.conn_query))
            except ValueError as e:
                self.notify(
                    f"{e}: give an address or prefix, a protocol, or a state",
                    severity="warning",
                    markup=False,
                )
                return
        self._close_filter()

    def _close_filter(self) -> None:
        filt = self.query_one("#filter", Input)
        if filt.has_class("-open"):
            filt.remove_class("-open")
            table = self._table()
            if table is not None:
                self.screen.set_focus(table)  # at once too: the next key is the table's
            self._show_filter_line()

    # --- toggles ---------------------------------------------------------------------------------

    def action_pause(self) -> None:
        if self.feed.playback is not None:
            self._toggle_playback()  # a replay pauses its playback; the tables follow it
        else:
            self.feed.set_paused(not self.feed.paused)
        self.refresh_status()

    @work(thread=True, group="playback", exclusive=True)
    def _toggle_playback(self) -> None:
        """Stopping the poller waits for a read under way: never on the UI thread."""
        assert self.feed.playback is not None
        self.feed.playback.toggle()
        self.app.call_from_thread(self.refresh_status)

    def action_speed(self, factor: float) -> None:
        if self.feed.playback is not None:
            self.feed.playback.set_speed(factor)
            self.refresh_status()

    @work(thread=True, group="step", exclusive=True)
    def action_step(self) -> None:
        if self.feed.playback is not None:
            error = self.feed.playback.step()
            if error is not None:
                self.app.call_from_thread(self.notify, error, severity="error", markup=False)

    def action_flip(self, setting: str) -> None:
        on = not getattr(self.feed.settings, setting)
        self.feed.update(**{setting: on})
        self.notify(FLIPPED[setting][on], timeout=3)  # the tables change on the next build: say it now
        self.refresh_status()

    def action_interval(self, factor: float) -> None:
        poller = self.feed.poller
        poller.interval = min(MAX_INTERVAL, max(MIN_INTERVAL, poller.interval * factor))
        self.notify(f"polling every {units.duration(poller.interval)}", timeout=2)
        self.refresh_status()

    # --- weight edits ----------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("drain", "restore", "set_weight"):
            return self.view == "dests" and self.feed.writer is not None
        if action in ("sort", "sort_reverse", "sort_menu"):
            return self.view in SORT_SETTING
        if action == "filter":  # a priority key: once the filter has the focus, `/` is text in it
            has_filter = self.view in FILTER_SETTING or self.view == "conns"
            return has_filter and not self.query_one("#filter", Input).has_focus
        if action in ("step", "speed"):
            return self.feed.playback is not None
        return True

    def _selected_dest(self) -> tuple[ServiceKey, DestKey, int] | None:
        views = self.views
        if views is None or views.shown is None or self.view != "dests":
            return None
        skey = views.settings.service
        key = self.query_one("#dests-table", LiveTable).cursor_key
        dkey = views.dest_keys.get(key) if key is not None else None
        svc = views.shown.service(skey) if skey is not None else None
        dest = svc.dest(dkey) if svc is not None and dkey is not None else None
        if skey is None or dest is None:
            return None
        return skey, dest.key, dest.weight

    def _begin(self, kind: str, weight: int | None = None) -> None:
        if self.feed.writer is None:
            self.notify("this source is read-only", severity="warning")
            return
        sel = self._selected_dest()
        if sel is None:
            self.notify("select a real server first", severity="warning")
            return
        skey, dkey, seen = sel
        self._preview(WriteOp(kind, skey, dkey, seen, weight))

    def action_drain(self) -> None:
        self._begin("drain")

    def action_restore(self) -> None:
        self._begin("restore")

    def action_set_weight(self) -> None:
        sel = self._selected_dest()
        if sel is None or self.feed.writer is None:
            self._begin("set_weight")  # says why not
            return
        _skey, dkey, seen = sel

        def chosen(weight: int | None) -> None:
            if weight is not None:
                self._begin("set_weight", weight)

        self.app.push_screen(WeightScreen(str(dkey), seen), chosen)

    @work(thread=True, group="write", exclusive=True)
    def _preview(self, op: WriteOp) -> None:
        assert self.feed.writer is not None
        views = self.views
        svc = views.shown.service(op.service) if views is not None and views.shown is not None else None
        new = 0 if op.kind == "drain" else op.weight
        try:
            if op.kind == "restore":
                rec = self.feed.writer.drains().get((op.service, op.dest))
                new = rec.previous if rec is not None else None
            effect = vm.weight_effect(svc, op.dest, new) if svc is not None and new is not None else None
            self.post_message(self.WritePreviewed(preview(op, self.feed.writer, effect)))
        except Exception as e:  # a write that cannot even be previewed is reported, never fatal
            self.post_message(self.WriteFinished(op, None, str(e) if isinstance(e, LvstopError) else repr(e)))

    def on_director_view_write_previewed(self, msg: WritePreviewed) -> None:
        p = msg.preview

        def answered(answer: Answer | None) -> None:
            if answer is not None:
                self._apply_write(p.op, answer)

        self.app.push_screen(ConfirmScreen(p), answered)

    @work(thread=True, group="write", exclusive=True)
    def _apply_write(self, op: WriteOp, answer: Answer) -> None:
        assert self.feed.writer is not None
        try:
            res = op.call(self.feed.writer, dry_run=False, force=answer.force, reason=answer.reason)
        except Exception as e:  # the kernel, the state file or a remote exporter said no: report it
            self.post_message(self.WriteFinished(op, None, str(e) if isinstance(e, LvstopError) else repr(e)))
            return
        self.post_message(self.WriteFinished(op, res.outcome, None))

    def on_director_view_write_finished(self, msg: WriteFinished) -> None:
        op = msg.op
        if msg.error is not None:
            self.notify(f"{op.verb} {op.dest}: {msg.error}", severity="error", timeout=8, markup=False)
        else:
            self.notify(f"{op.verb} {op.dest}: {msg.outcome}", timeout=4, markup=False)
        self.feed.refresh_drains()


def director_table(settings: tuple[vm.Setting, ...]) -> Group:
    """`name = value`, then what it means on its own indented lines: readable from 40 columns up."""
    parts: list[RenderableType] = []
    section = None
    for s in settings:
        if s.section != section:
            section = s.section
            parts.append(Text(f" {s.section} ", style="reverse bold"))
        style = {"good": "green", "warn": "yellow", "bad": "bold red"}.get(s.tone, "")
        parts.append(Text.assemble((s.name, "bold"), " = ", (s.value, style)))
        if s.meaning:
            parts.append(Padding(Text(s.meaning, style=style or "dim"), (0, 0, 0, 4)))
    if not settings:
        parts.append(Text("waiting for the first poll…", style="dim"))
    return Group(*parts)
