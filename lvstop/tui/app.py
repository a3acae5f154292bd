"""The lvstop app: one director (local, demo, replay) or one tab per --connect URL.

`make_app()` builds it from pollers (tests, benches, screenshots); `run(args)` builds the sources,
pollers and writers from the command line and runs it until quit, SIGTERM or SIGHUP.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import BindingType
from textual.events import Resize
from textual.markup import escape
from textual.screen import Screen
from textual.theme import Theme
from textual.widgets import Footer, TabbedContent, TabPane

from lvstop import gcpolicy
from lvstop.errors import SourceError, UsageError
from lvstop.model import IssueKind
from lvstop.poller import Poller
from lvstop.sources import Source
from lvstop.sources.replay import ReplaySource
from lvstop.tui import viewmodel as vm
from lvstop.tui.bindings import KEYS, bindings, palette_title
from lvstop.tui.feed import DirectorFeed, HealthChecks, Managed, PollerLike, Writer
from lvstop.tui.names import Resolver, reverse_dns
from lvstop.tui.playback import Playback
from lvstop.tui.screens.help import HelpScreen
from lvstop.tui.widgets.director_view import DirectorView
from lvstop.tui.widgets.live_table import LiveTable
from lvstop.tui.writes import RemoteWriter

if TYPE_CHECKING:
    from lvstop.health.config import HealthConfig
    from lvstop.health.runner import HealthRunner
    from lvstop.health.state import Transition

# textual-dark gives accent and warning the same orange; here each tone has its own hue:
# accent (names, titles) cyan, warning orange, error red, drained (secondary) violet.
THEME = Theme(
    name="lvstop",
    primary="#0178D4",
    secondary="#B98CF0",
    accent="#4FC1D6",
    warning="#FFB347",
    error="#FF6B6B",
    success="#4EBF71",
    foreground="#E0E0E0",
    dark=True,
)
NARROW_WIDTH = 100  # below this the header and dialogs compact (the tables drop columns on their own)
SHORT_HEIGHT = 20


EXIT_GRACE = 3.0  # seconds an exit through Textual may take after SIGTERM/SIGHUP before the process just ends
# Mouse reporting off, back to the main screen, cursor shown: what Textual's driver undoes on a clean exit.
RESTORE_TERMINAL = b"\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?1049l\x1b[?25h"


class LvstopApp(App[int]):
    CSS_PATH = "lvstop.tcss"
    TITLE = "lvstop"
    BINDINGS: ClassVar[list[BindingType]] = bindings("app")

    def __init__(self, feeds: Sequence[DirectorFeed], *, autostart: bool = True) -> None:
        super().__init__()
        if not feeds:
            raise ValueError("lvstop needs at least one director")
        self.feeds = tuple(feeds)
        for feed in self.feeds:
            feed.wants_brief = len(self.feeds) > 1
        self.autostart = autostart
        self.startup_warnings: list[str] = []  # e.g. "netlink refused: reading /proc instead"
        self.event_loop: asyncio.AbstractEventLoop | None = None
        self.register_theme(THEME)
        self.theme = THEME.name

    def compose(self) -> ComposeResult:
        if len(self.feeds) == 1:
            yield DirectorView(self.feeds[0], autostart=self.autostart, id="director-0")
        else:
            with TabbedContent(id="directors"):
                for i, feed in enumerate(self.feeds):
                    with TabPane(feed.label or f"director {i + 1}", id=f"tab-{i}"):
                        yield DirectorView(feed, autostart=self.autostart, id=f"director-{i}")
                with TabPane("side by side", id="tab-side"):
                    yield LiveTable(id="side-by-side")
        yield Footer()

    def on_mount(self) -> None:
        gcpolicy.manage()  # polls and view builds freeze what they leave alive (lvstop.gcpolicy)
        self.event_loop = asyncio.get_running_loop()
        self.director.focus_view()
        for w in self.startup_warnings:
            self.notify(w, severity="warning", timeout=10, markup=False)

    def on_unmount(self) -> None:
        gcpolicy.release()  # hand frozen objects back: the process may go on without the app

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "tab-side":
            self.query_one("#side-by-side", LiveTable).focus()
        else:
            self.director.focus_view()

    def on_director_view_applied(self, _msg: DirectorView.Applied) -> None:
        """A director has new views: refresh the side-by-side table (a few dozen rows)."""
        if len(self.feeds) > 1:
            views = [self.query_one(f"#director-{i}", DirectorView) for i in range(len(self.feeds))]
            human = self.feeds[0].settings.human
            figures = [(v.feed.label, v.views.brief if v.views else None, v.feed.health()) for v in views]
            self.query_one("#side-by-side", LiveTable).set_model(vm.side_by_side(figures, human))

    def on_resize(self, event: Resize) -> None:
        self.set_class(event.size.width < NARROW_WIDTH, "narrow")
        self.set_class(event.size.height < SHORT_HEIGHT, "short")

    @property
    def director(self) -> DirectorView:
        """The director in view (the active tab)."""
        if len(self.feeds) == 1:
            return self.query_one("#director-0", DirectorView)
        active = self.query_one("#directors", TabbedContent).active
        index = active.removeprefix("tab-") if active and active != "tab-side" else "0"
        return self.query_one(f"#director-{index}", DirectorView)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_next_director(self) -> None:
        self._cycle(1)

    def action_previous_director(self) -> None:
        self._cycle(-1)

    def _cycle(self, step: int) -> None:
        if len(self.feeds) > 1:
            tabs = self.query_one("#directors", TabbedContent)
            ids = [f"tab-{i}" for i in range(len(self.feeds))] + ["tab-side"]
            current = ids.index(tabs.active) if tabs.active in ids else 0
            tabs.active = ids[(current + step) % len(ids)]

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """The palette: the same keys as the help screen, titled "area: verb"."""
        for k in KEYS:
            if k.palette:
                # The palette reads title and help as markup: a key shown as "[/]" would be a closing tag.
                yield SystemCommand(
                    escape(palette_title(k)),
                    escape(f"{k.help}  [{k.display}]"),
                    self._runner(k.action, k.scope),
                )

    def _runner(self, action: str, scope: str) -> Callable[[], object]:
        def run() -> object:
            target = self if scope == "app" else self.director
            return self.run_action(action, target)

        return run


def end_on_signals(app: LvstopApp) -> None:
    """SIGTERM and SIGHUP end the process whatever state the app is in (main thread only).

    While the app runs, it exits through Textual, whose driver restores the terminal; if that has not
    ended the process within EXIT_GRACE (a thread stuck on a lock, a dead terminal), or the app is not
    running any more (it crashed, the interpreter waits for threads), the process ends at once.
    The handler only writes the signal to a pipe: it interrupts the main thread anywhere, even inside
    `threading`'s own locks (a Thread.start), so starting a timer there could deadlock; a watcher thread,
    started here, does the rest.
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def handle(sig: int, _frame: object) -> None:
        with contextlib.suppress(OSError):  # a full pipe: a signal is already on its way
            os.write(write_end, bytes([sig]))

    threading.Thread(target=_end_on_signal, args=(app, read_end), name="lvstop-signals", daemon=True).start()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handle)


def _end_on_signal(app: LvstopApp, read_end: int) -> None:
    status = 128 + os.read(read_end, 1)[0]
    loop = app.event_loop
    if app.is_running and loop is not None and not loop.is_closed():
        with contextlib.suppress(RuntimeError):  # the loop closed since: nothing left to wait for
            loop.call_soon_threadsafe(app.exit, status)
            time.sleep(EXIT_GRACE)
    _end_now(status)


def _end_now(status: int) -> None:
    with contextlib.suppress(OSError, ValueError):
        if os.isatty(2):  # Textual writes to stderr; harmless if already restored
            # A handle of our own that never blocks: a terminal nobody reads (ctrl+s, a full pty) must not
            # hold the exit, and O_NONBLOCK on fd 2 itself would leak to the shell that shares it.
            fd = os.open("/proc/self/fd/2", os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY)
            try:
                os.write(fd, RESTORE_TERMINAL)
            finally:
                os.close(fd)
    os._exit(status)


def make_app(
    pollers: Sequence[PollerLike],
    *,
    writers: Sequence[Writer | None] | None = None,
    labels: Sequence[str] | None = None,
    playbacks: Sequence[Playback | None] | None = None,
    autostart: bool = True,
    resolver: Resolver = reverse_dns,
    clock: Callable[[], float] = time.monotonic,
    checks: Sequence[HealthChecks | None] | None = None,
    managed: Sequence[Managed | None] | None = None,
) -> LvstopApp:
    """The app over ready-made pollers. `autostart=False` leaves polling to the caller (poll_once).
    `checks`: each director's health checks (None: no Health columns for it); `managed`: who manages
    its services (None: nobody looks)."""
    feeds = [
        DirectorFeed(
            p,
            writer=writers[i] if writers else None,
            resolver=resolver,
            clock=clock,
            label=labels[i] if labels else "",
            playback=playbacks[i] if playbacks else None,
            checks=checks[i] if checks else None,
            managed=managed[i] if managed else None,
        )
        for i, p in enumerate(pollers)
    ]
    return LvstopApp(feeds, autostart=autostart)


DEFAULT_DRAIN_STATE = "/var/lib/lvstop/drains.json"


def writer_for(
    source: Source, poller: Poller, drain_state: str, *, actor: str | None = None, url: str | None = None
) -> Writer | None:
    """Remote directors write through their exporter (`url`, credentials included); local writes need
    a source that can SET_DEST (netlink, the demo); /proc and replays are read-only."""
    if url is not None:
        return RemoteWriter(url)
    from lvstop.sources.factory import write_target

    target = write_target(source)  # `auto`: refuses edits, saying why, once it reads /proc
    if target is None:
        return None
    from lvstop.control import Control
    from lvstop.tui.writes import LocalWriter

    return LocalWriter(Control(target, drain_state, poller.events, latest=lambda: poller.latest), actor)


# What `lvstop --demo` checks when not given --health.config. Its answers are simulated (SimProber:
# 192.0.2.24 never answers, 192.0.2.13:8080 fails 40 s of every 5 minutes): no probe leaves the machine.
# NTP, SIP and Diameter (UDP, SCTP) stay unchecked, to show how dests no check covers look.
DEMO_CHECKS = """\
checks:
  - service: "TCP 203.0.113.10:80"
    type: http
    path: /healthz
    interval: 2s
  - service: "TCP 203.0.113.10:443"
    type: https
    path: /healthz
    interval: 2s
  - service: "TCP 203.0.113.11:8080"
    type: tcp
    interval: 2s
  - service: "TCP 203.0.113.12:993"
    type: tcp
    interval: 2s
  - service: "TCP 203.0.113.13:443"
    type: tcp
    interval: 2s
  - service: "TCP 203.0.113.14:25"
    type: tcp
    interval: 2s
  - service: "TCP [2001:db8:10::10]:443"
    type: tcp
    interval: 2s
  - service: "TCP 203.0.113.17:3306"
    type: tcp
    interval: 2s
  - service: "UDP 203.0.113.10:53"
    type: dns
    query: www.example.org
    interval: 2s
  - service: "FWM 1"
    type: tcp
    port: 80
    interval: 2s
  - service: "FWM 2 IPv6"
    type: tcp
    port: 80
    interval: 2s
"""


def health_checks(args: argparse.Namespace) -> HealthConfig | None:
    """--health.config, or the demo's own checks; None: no checks. Refused for recordings and remote
    directors: probing from here says nothing about what their director sees."""
    path = getattr(args, "health_config", None)
    if path is not None and args.source in ("replay", "remote"):
        where = "a recording" if args.source == "replay" else "a remote director (give it to its exporter)"
        raise UsageError(f"--health.config probes real servers from this host: not for {where}")
    if path is not None:
        from lvstop.health.command import load_config

        return load_config(path)
    if args.source != "demo":
        return None
    from lvstop.health.config import parse

    return parse(DEMO_CHECKS, "<demo checks>")


def health_runner(config: HealthConfig, source: Source, poller: Poller, netns: str | None) -> HealthRunner:
    """The checks of one director's dests, told the dests by its poller; every transition goes to its
    event log. The demo's answers are simulated."""
    from lvstop.events import HEALTH_DOWN, HEALTH_UP, Event, health_event
    from lvstop.health.runner import HealthRunner, SimProber

    def transition(t: Transition) -> None:
        event = health_event(t)
        if event is not None:
            poller.events.append(event)

    def trouble(message: str, working: bool) -> None:  # the checks' process ended, or runs again
        poller.events.append(Event(time.time(), HEALTH_UP if working else HEALTH_DOWN, message))

    start = SimProber().start if source.name == "demo" else None
    runner = HealthRunner(config, start=start, netns=netns, on_transition=transition, on_trouble=trouble)
    poller.subscribe(runner.update)
    return runner


def _remote(source: Source, poller: Poller) -> tuple[HealthChecks | None, Managed | None]:
    """A remote director's health checks and who manages its services, as its exporter says (fetched
    after each poll, in the poller's thread); (None, None) for any other source."""
    from lvstop.sources.remote import RemoteHealth, RemoteManaged, RemoteSource

    if not isinstance(source, RemoteSource):
        return None, None
    health, managed = RemoteHealth(source), RemoteManaged(source)
    poller.subscribe(health.update)
    poller.subscribe(managed.update)
    return health, managed


def _managed(source: Source, netns: str | None) -> Managed | None:
    """keepalived and ldirectord are looked for on this host, for the IPVS this host reads (its own or
    --netns); the demo and recordings are nobody's here (a remote director's: see _remote)."""
    if source.name not in ("netlink", "proc"):
        return None
    from lvstop.managers import ManagedLookup

    return ManagedLookup(netns)


def _playback(source: Source, poller: Poller, cadence: float) -> Playback | None:
    if not isinstance(source, ReplaySource):
        return None
    playback = Playback(poller, source, source.cadence or cadence)  # the pace it was recorded at
    poller.subscribe(playback.on_snapshot)
    return playback


def _require_ip_vs(source: Source) -> None:
    """No ip_vs: end here with the words and exit status `lvstop list` gives (3), rather than open a
    screen that can only say so (netlink and auto find out when they open)."""
    try:
        source.read()
    except SourceError as e:
        if e.kind is IssueKind.NO_IPVS:
            raise


def run(args: argparse.Namespace) -> int:
    """`lvstop` without a command: open the sources the arguments name and run until quit."""
    from lvstop.sources.factory import open_source

    warnings: list[str] = []
    urls: list[str | None] = list(args.connect) if args.connect else [None]
    sources: list[Source] = []
    runners: list[HealthRunner] = []
    demo_dir: tempfile.TemporaryDirectory[str] | None = None
    config = health_checks(args)
    try:
        for url in urls:
            try:
                source = open_source(
                    args.source,
                    netns=args.netns,
                    proc_root=args.proc_root,
                    replay=args.replay,
                    connect=url,
                    seed=args.seed,
                    warn=warnings.append,
                )
            except ValueError as e:  # the factory's word for a combination it cannot serve
                raise UsageError(str(e)) from None
            sources.append(source)
            if isinstance(source, ReplaySource):
                warnings.extend(source.damage)  # cut short: known at open
            elif args.source == "proc":
                _require_ip_vs(source)
        if args.source == "demo":
            demo_dir = tempfile.TemporaryDirectory(prefix="lvstop-demo-")  # demo drains end with the demo
        drain_state = (
            os.path.join(demo_dir.name, "drains.json")
            if demo_dir is not None
            else getattr(args, "drain_state", None) or DEFAULT_DRAIN_STATE
        )
        pollers = [Poller(s, interval=args.interval) for s in sources]
        writers = [
            writer_for(s, p, drain_state, url=url) for s, p, url in zip(sources, pollers, urls, strict=True)
        ]
        labels = [url or "" for url in urls]
        playbacks = [_playback(s, p, args.interval) for s, p in zip(sources, pollers, strict=True)]
        if config is not None:
            runners = [health_runner(config, s, p, args.netns) for s, p in zip(sources, pollers, strict=True)]
            for r in runners:
                r.start()
        remote = [_remote(s, p) for s, p in zip(sources, pollers, strict=True)]  # --connect: theirs
        checks: list[HealthChecks | None] = [*runners] or [h for h, _ in remote]
        app = make_app(
            pollers,
            writers=writers,
            labels=labels,
            playbacks=playbacks,
            checks=checks if any(c is not None for c in checks) else None,
            managed=[m or _managed(s, args.netns) for (_, m), s in zip(remote, sources, strict=True)],
        )
        app.startup_warnings = warnings
        end_on_signals(app)
        status = app.run()
        if app.return_code:  # a crash: Textual printed the traceback and returns no value
            return app.return_code
        return 0 if status is None else status
    finally:
        for r in runners:
            r.stop()
        for s in sources:
            s.close()
        if demo_dir is not None:
            demo_dir.cleanup()
