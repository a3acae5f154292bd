"""The one policy for CPython's cyclic garbage collector in an lvstop process.

Snapshots and views hold no reference cycles: refcounting frees them. But a poll of a big director
builds hundreds of thousands of tracked objects that live until the next poll, and left alone the
collector rescans them again and again: young collections every 700 allocations, a full one of a
million objects every few seconds (300 ms with the GIL held at 100k dests, measured), on whichever
thread allocates next: a TUI frame, an HTTP health check. So:

- big builds (a poll, a netlink read, a render, a TUI view build) run with the collector paused
  (`paused`);
- in a managed process (the TUI and the exporter call `manage`), whoever turns the collector back on
  first freezes what is alive (gc.freeze moves it out of the collector's sight, an O(1) splice): turned
  on first, the collector would walk the whole build at once, 60-140 ms with the GIL held at 100k dests;
  every FULL_EVERY seconds one full collection frees whatever cyclic garbage the process made meanwhile;
- elsewhere (`lvstop list`, tests, library use) the collector runs as CPython's defaults say.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

FULL_EVERY = 600.0  # seconds between full collections in a managed process


@contextmanager
def paused() -> Iterator[None]:
    """Hold the collector off for a build; nested and already-disabled uses leave it as they found it.
    The use that turns it back on freezes first in a managed process (see the module docstring)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            PACER.after_build()
            gc.enable()


class Pacer:
    """Freezes after builds and collects fully now and then, once `manage` switched it on."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, full_every: float = FULL_EVERY) -> None:
        self._clock = clock
        self._full_every = full_every
        self._lock = threading.Lock()
        self._last_full = clock()
        self.managed = False

    def manage(self) -> None:
        with self._lock:
            self.managed = True
            self._last_full = self._clock()

    def release(self) -> None:
        """Hand frozen objects back to the collector (the process goes on without the policy)."""
        with self._lock:
            self.managed = False
            gc.unfreeze()

    def after_build(self) -> None:
        if not self.managed:
            return
        with self._lock:
            if not self.managed:
                return
            if self._clock() - self._last_full > self._full_every:
                gc.unfreeze()
                gc.collect()
                self._last_full = self._clock()
            gc.freeze()


PACER = Pacer()
manage = PACER.manage
release = PACER.release
