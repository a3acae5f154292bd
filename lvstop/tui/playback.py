"""`--replay`: play, pause, step and speed over a recording, by driving the poller that reads it.

The poller reads one recorded snapshot per poll, so the speed is the poll interval (the recording's
own cadence divided by the speed), pausing stops the poller, and a step is one poll. Nothing here
imports Textual; the director view calls it from its keys (the step from a worker thread).
"""

from __future__ import annotations

import threading
from typing import Protocol

from lvstop.errors import LvstopError
from lvstop.model import Snapshot
from lvstop.sources.replay import ReplaySource

MIN_SPEED, MAX_SPEED = 0.125, 64.0


class _Poller(Protocol):
    interval: float

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def poll_once(self) -> Snapshot: ...


class Playback:
    def __init__(self, poller: _Poller, source: ReplaySource, cadence: float) -> None:
        self.poller = poller
        self.source = source
        self.cadence = cadence  # seconds between recorded snapshots
        poller.interval = cadence
        self.speed = 1.0
        self.playing = True
        self._lock = threading.Lock()

    def on_snapshot(self, _snap: Snapshot) -> None:
        """Poller subscriber: at the end of the recording, stop rather than re-read the last snapshot."""
        if self.source.finished and self.playing:
            self.playing = False
            self.poller.stop()

    def pause(self) -> None:
        self.playing = False
        self.poller.stop()

    def resume(self) -> None:
        if self.source.finished:
            self.source.seek(0)  # play again from the start, as a video player does
        self.playing = True
        self.poller.start()

    def toggle(self) -> None:
        if self.playing:
            self.pause()
        else:
            self.resume()

    def step(self) -> str | None:
        """One snapshot forward while paused (blocking: call it off the UI thread). Returns an error."""
        with self._lock:
            if self.playing or self.source.finished:
                return None
            try:
                self.poller.poll_once()
            except LvstopError as e:
                return str(e)
            return None

    def set_speed(self, factor: float) -> float:
        self.speed = min(MAX_SPEED, max(MIN_SPEED, self.speed * factor))
        self.poller.interval = self.cadence / self.speed
        return self.speed

    @property
    def label(self) -> str:
        state = "end" if self.source.finished else ("playing" if self.playing else "paused")
        bad = len(self.source.damage) - self.source.truncated
        notes = [f"{bad} bad line{'s' if bad > 1 else ''} skipped"] if bad else []
        notes += ["cut short"] if self.source.truncated else []
        return ", ".join(
            [f"replay {self.source.position}/{len(self.source)} at {self.speed:g}x", state, *notes]
        )
