#!/usr/bin/env python3
"""Regenerates the screenshots: every screen of `lvstop --demo`, as SVG and PNG.

    .venv/bin/python screenshots/make_screenshots.py            # all sizes
    .venv/bin/python screenshots/make_screenshots.py --only 120x40

The demo director is seeded and runs on a manual clock (lvstop.tui.stage), so the pictures only
change when lvstop does. The story: a minute and a half of traffic near the daily peak; 40 s in, the
on-call drained 192.0.2.13 from the persistent HTTPS service; 50 s in, someone else lowered a
weight; 60 s in, two polls failed. Last, the source fails for good (the banner) and the guard
refuses to drain NTP's last live dest. PNGs come from rsvg-convert (librsvg2-bin).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ["TZ"] = "UTC"  # the events' clock times
time.tzset()

from lvstop.errors import SourceError  # noqa: E402
from lvstop.model import DestKey, IssueKind, ServiceKey, Snapshot  # noqa: E402
from lvstop.sources.sim import SimSource  # noqa: E402
from lvstop.tui.app import LvstopApp  # noqa: E402
from lvstop.tui.stage import ACTOR, Stage, play, settle  # noqa: E402
from lvstop.tui.widgets.director_view import DirectorView  # noqa: E402
from lvstop.tui.widgets.live_table import LiveTable  # noqa: E402

HERE = Path(__file__).resolve().parent
SIZES = {"120x40": (120, 40), "80x24": (80, 24), "40x12": (40, 12)}
HTTPS = ServiceKey.tcp("203.0.113.10", 443)
DRAINED = DestKey(2, "192.0.2.13", 8443)
NTP = ServiceKey.udp("203.0.113.15", 123)
SMTP = ServiceKey.tcp("203.0.113.14", 25)
SMTP_DEST = DestKey(2, "192.0.2.52", 25)


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
    path.write_text(svg)
    subprocess.run(["rsvg-convert", str(path), "-o", str(path.with_suffix(".png"))], check=True)
    return path


async def until(pilot: object, check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("the screen did not show what was expected")
        await pilot.pause(0.02)  # type: ignore[attr-defined]


class Hiccup(SimSource):
    """The demo director, whose reads fail while `failing` is set (netlink refused, say)."""

    failing: str | None = None

    def read(self) -> Snapshot:
        if self.failing:
            raise SourceError(IssueKind.NO_PERMISSION, self.failing)
        return super().read()


async def fail(app: LvstopApp, pilot: object, stage: Stage, polls: int) -> None:
    for _ in range(polls):
        with contextlib.suppress(SourceError):
            stage.advance()
        await pilot.pause()  # type: ignore[attr-defined]


async def shoot(size: str) -> list[Path]:
    width, height = SIZES[size]
    stage = Stage(source_class=Hiccup)
    source = stage.source
    assert isinstance(source, Hiccup)
    app = stage.app()
    out: list[Path] = []
    async with app.run_test(size=(width, height)) as pilot:
        await play(app, pilot, stage, 20)
        assert stage.writer is not None
        stage.writer.drain(HTTPS, DRAINED, expect=100, force=False, reason=None, dry_run=False)
        await play(app, pilot, stage, 25)
        # Someone else (keepalived, a colleague with ipvsadm) lowers a weight: flagged as outside lvstop.
        smtp = stage.source.get_dest(SMTP, SMTP_DEST)
        assert smtp is not None
        stage.source.set_dest(SMTP, dataclasses.replace(smtp, weight=2))
        await play(app, pilot, stage, 5)
        source.failing = "netlink: Operation not permitted (lvstop needs CAP_NET_ADMIN)"  # a short outage
        await fail(app, pilot, stage, 2)
        source.failing = None
        await play(app, pilot, stage, 8)
        view = app.query_one(DirectorView)
        stage.clock.now += 1.2  # the header's "last poll ... ago", as it reads between two polls
        view.refresh_status()
        out.append(save(app, "services", size))
        if size == "40x12":
            return out

        view.query_one("#services-table", LiveTable).select_key(str(HTTPS))
        await pilot.press("enter")
        await settle(app, pilot)
        view.query_one("#dests-table", LiveTable).select_key(str(DRAINED))
        await settle(app, pilot)
        out.append(save(app, "dests", size))

        await pilot.press("2")
        await until(
            pilot,
            lambda: (
                view.views is not None
                and view.views.conns is not None
                and "reading" not in "".join(t for t, _ in view.views.conns.line)
            ),
        )
        await settle(app, pilot)
        out.append(save(app, "connections", size))

        for key, name in (("3", "director"), ("4", "events")):
            await pilot.press(key)
            await settle(app, pilot)
            out.append(save(app, name, size))

        await pilot.press("question_mark")
        await pilot.pause()
        out.append(save(app, "help", size))
        await pilot.press("escape", "1")

        source.failing = "netlink: Operation not permitted (lvstop needs CAP_NET_ADMIN)"
        await fail(app, pilot, stage, 3)
        stage.clock.now += 1.2
        view.refresh_status()
        await pilot.pause()
        out.append(save(app, "failing", size))
        source.failing = None

        # The guard: NTP has two dests; drain one, then ask to drain the other.
        ntp = stage.source.read().service(NTP)
        assert ntp is not None
        stage.writer.drain(NTP, ntp.dests[0].key, expect=ntp.dests[0].weight, dry_run=False)
        await play(app, pilot, stage, 1)
        view.query_one("#services-table", LiveTable).select_key(str(NTP))
        await pilot.press("enter")
        await settle(app, pilot)
        view.query_one("#dests-table", LiveTable).select_key(str(ntp.dests[1].key))
        await pilot.press("d")
        await until(pilot, lambda: app.screen.id == "confirm" or type(app.screen).__name__ == "ConfirmScreen")
        await pilot.pause()
        out.append(save(app, "drain-guard", size))
    stage.close()
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
    for size in [args.only] if args.only else list(SIZES):
        for path in asyncio.run(shoot(size)):
            print(path.relative_to(HERE.parent), "and .png")
    print(f"(drains by {ACTOR}; demo clock starts 2026-01-14 15:30 UTC)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
