#!/usr/bin/env python3
"""Regenerates the screenshots: every screen of `lvstop --demo` as it runs, as SVG and PNG.

    .venv/bin/python screenshots/make_screenshots.py            # all sizes
    .venv/bin/python screenshots/make_screenshots.py --only 120x40

The app is the one `lvstop --demo` runs: the seeded demo director on the real clock, polled every
2 s, with the demo's simulated health checks, drained through its keys. The pictures are taken as it
runs, so they differ from run to run as the demo's traffic does. The story: half a minute of traffic;
the on-call drains 192.0.2.13 from the persistent HTTPS service (d, then y) and watches it for twenty
seconds; the API service, whose 192.0.2.24 is down but still weighted; a filter; then health drains
192.0.2.24 (as `lvstop-exporter --health.act` on this director would, through the same drain-state
file); last, the guard refuses to drain NTP's last live dest. PNGs come from rsvg-convert (librsvg2-bin).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ["TZ"] = "UTC"  # the events' clock times
time.tzset()

from textual.pilot import Pilot  # noqa: E402

from lvstop.model import DestKey, ServiceKey  # noqa: E402
from lvstop.poller import Poller  # noqa: E402
from lvstop.sources.sim import SimSource  # noqa: E402
from lvstop.tui.app import LvstopApp, health_checks, health_runner, make_app, writer_for  # noqa: E402
from lvstop.tui.screens.confirm import ConfirmScreen  # noqa: E402
from lvstop.tui.widgets.director_view import DirectorView  # noqa: E402
from lvstop.tui.widgets.live_table import LiveTable  # noqa: E402
from lvstop.tui.writes import LocalWriter  # noqa: E402

HERE = Path(__file__).resolve().parent
SIZES = {"120x40": (120, 40), "80x24": (80, 24), "40x12": (40, 12)}
HTTPS = ServiceKey.tcp("203.0.113.10", 443)
DRAINED = DestKey(2, "192.0.2.13", 8443)
NTP = ServiceKey.udp("203.0.113.15", 123)
API = ServiceKey.tcp("203.0.113.11", 8080)  # its 192.0.2.24 never answers the health checks
DEAD = DestKey(2, "192.0.2.24", 8080)
INTERVAL = 2.0  # as `lvstop --demo`

# Textual's SVG cell: 12.2 px wide, 24.4 px high, the text baseline 18.5 px below the cell's top.
CELL_W, CELL_H, BASELINE = 12.2, 24.4, 18.5
BLOCKS = "▁▂▃▄▅▆▇█"  # U+2581..U+2588: the sparklines' bars, k/8 of a cell high
_TEXT = re.compile(r'<text class="([^"]+)" x="([\d.]+)" y="([\d.]+)"([^>]*)>([^<]*)</text>')


def bars_as_rects(svg: str) -> str:
    """Sparkline bars drawn as rectangles of exact height in their cells.

    rsvg-convert has no Fira Code: in DejaVu Sans Mono the block glyphs sit on the font's own ascent
    and descent, not on Textual's 24.4 px cell, so the bars of neighbouring rows ran into each other
    and read as white blocks. A rectangle of k/8 of the cell, in the text's own colour (its class's
    fill), is what a terminal draws.
    """

    def one(m: re.Match[str]) -> str:
        cls, x, y, rest, body = m.group(1), float(m.group(2)), float(m.group(3)), m.group(4), m.group(5)
        chars = html.unescape(body)
        if not any(c in BLOCKS for c in chars):
            return m.group(0)
        top = y - BASELINE
        rects = []
        for i, c in enumerate(chars):
            level = BLOCKS.find(c) + 1
            if level:
                h = CELL_H * level / len(BLOCKS)
                rects.append(
                    f'<rect class="{cls}" x="{x + i * CELL_W:.1f}" y="{top + CELL_H - h:.2f}" '
                    f'width="{CELL_W}" height="{h:.2f}" shape-rendering="crispEdges"/>'
                )
        text = "".join("\xa0" if c in BLOCKS else c for c in chars)
        escaped = html.escape(text, quote=False).replace("\xa0", "&#160;")
        return f'<text class="{cls}" x="{m.group(2)}" y="{m.group(3)}"{rest}>{escaped}</text>' + "".join(
            rects
        )

    return _TEXT.sub(one, svg)


def save(app: LvstopApp, name: str, size: str) -> Path:
    path = HERE / f"{name}-{size}.svg"
    app.save_screenshot(path.name, str(HERE))
    # librsvg drops leading spaces (right-aligned numbers would shift left) unless told to keep them,
    # and has no Fira Code: DejaVu Sans Mono has every glyph lvstop draws, and at 20.264px its advance
    # (0.602 em) is the 12.2px cell Textual lays the text out on (librsvg ignores textLength).
    svg = path.read_text()
    svg = svg.replace("<svg ", '<svg xml:space="preserve" ', 1)
    svg = re.sub(r"font-family: *\"?Fira Code\"?", 'font-family: "DejaVu Sans Mono"', svg)
    svg = svg.replace("font-size: 20px;", "font-size: 20.264px;")
    path.write_text(bars_as_rects(svg))
    subprocess.run(["rsvg-convert", str(path), "-o", str(path.with_suffix(".png"))], check=True)
    return path


async def until(pilot: Pilot[int], check: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the screen did not show what was expected")
        await pilot.pause(0.05)


async def polls(pilot: Pilot[int], poller: Poller, n: int) -> None:
    """Wait, on the real clock, for `n` more polls of the running demo."""
    start = poller.latest.seq if poller.latest is not None else 0
    await until(
        pilot, lambda: poller.latest is not None and poller.latest.seq >= start + n, 10 + n * INTERVAL * 2
    )
    await pilot.pause(0.3)  # the views of that poll built and shown


async def confirm(pilot: Pilot[int], app: LvstopApp) -> None:
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
    await pilot.pause(0.2)


async def shoot(sizes: list[str]) -> list[Path]:
    """One demo, as `lvstop --demo` runs it; every screen at every size."""
    source = SimSource(seed=1)
    poller = Poller(source, interval=INTERVAL)
    config = health_checks(argparse.Namespace(source="demo", health_config=None))  # the demo's own
    assert config is not None
    checks = health_runner(config, source, poller, None)
    checks.start()
    out: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="lvstop-shots-") as tmp:
        writer = writer_for(source, poller, os.path.join(tmp, "drains.json"), actor="tui:oncall")
        app = make_app([poller], writers=[writer], checks=[checks])
        width, height = SIZES[sizes[0]]
        async with app.run_test(size=(width, height)) as pilot:
            view = app.query_one(DirectorView)
            services = view.query_one("#services-table", LiveTable)
            dests = view.query_one("#dests-table", LiveTable)
            await polls(pilot, poller, 12)  # the trends fill

            async def open_service(skey: ServiceKey) -> None:
                await pilot.press("1")
                services.select_key(str(skey))
                await pilot.press("enter")
                await until(pilot, lambda: view.view == "dests" and dests.model.rows)

            # The on-call drains 192.0.2.13 and watches its connections fall.
            await open_service(HTTPS)
            dests.select_key(str(DRAINED))
            await pilot.press("d")
            await confirm(pilot, app)
            await pilot.press("y")
            await polls(pilot, poller, 10)
            await pilot.press("1")
            await pilot.pause(0.3)
            for size in sizes:
                await pilot.resize_terminal(*SIZES[size])
                await pilot.pause(0.3)
                out.append(save(app, "services", size))
                if size == "40x12":
                    continue
                await open_service(HTTPS)
                dests.select_key(str(DRAINED))
                await pilot.pause(0.2)
                out.append(save(app, "dests", size))
                await pilot.press("escape")
                await open_service(API)
                out.append(save(app, "health", size))
                await open_service(HTTPS)
                dests.select_key(str(DRAINED))
                await pilot.pause(0.2)
                await pilot.press("enter")  # its connections
                await until(
                    pilot,
                    lambda: (
                        view.views is not None
                        and view.views.conns is not None
                        and "reading" not in "".join(t for t, _ in view.views.conns.line)
                    ),
                )
                await pilot.pause(0.3)
                out.append(save(app, "connections", size))
                for key, name in (("3", "director"), ("4", "events")):
                    await pilot.press(key)
                    await pilot.pause(0.3)
                    out.append(save(app, name, size))
                await pilot.press("question_mark")
                await pilot.pause(0.3)
                out.append(save(app, "help", size))
                await pilot.press("escape", "1", "slash", *"udp", "enter")
                await pilot.pause(0.5)
                out.append(save(app, "filter", size))
                await pilot.press("escape")

            # Health drains the dead dest, as the exporter's health actor does (cause `health`).
            assert isinstance(writer, LocalWriter)
            writer.control.drain(
                API, DEAD, actor="health", cause="health", reason="health: down (tcp: timed out after 2 s)"
            )
            await polls(pilot, poller, 1)
            for size in sizes:
                if size == "40x12":
                    continue
                await pilot.resize_terminal(*SIZES[size])
                await open_service(API)
                dests.select_key(str(DEAD))
                await pilot.pause(0.2)
                out.append(save(app, "health-drained", size))

            # The guard: NTP has two dests; drain one, then ask to drain the other.
            await pilot.resize_terminal(*SIZES[sizes[0]])
            await open_service(NTP)
            first, second = (r.key for r in dests.model.rows)
            dests.select_key(first)
            await pilot.press("d")
            await confirm(pilot, app)
            await pilot.press("y")
            await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
            await polls(pilot, poller, 1)
            for size in sizes:
                await pilot.resize_terminal(*SIZES[size])
                dests.select_key(second)
                await pilot.press("d")
                await confirm(pilot, app)
                out.append(save(app, "drain-guard", size))
                await pilot.press("escape")
                await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
    checks.stop()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=sorted(SIZES), help="one terminal size only")
    args = parser.parse_args()
    if shutil.which("rsvg-convert") is None:
        print("make_screenshots: rsvg-convert not found (apt-get install librsvg2-bin)", file=sys.stderr)
        return 1
    for path in asyncio.run(shoot([args.only] if args.only else list(SIZES))):
        print(path.relative_to(HERE.parent), "and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
