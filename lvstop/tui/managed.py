"""Which services of a local director keepalived or ldirectord manage, for the dashboard."""

from __future__ import annotations

import time
from collections.abc import Callable

from lvstop.control import WeightManagers
from lvstop.managers import by_service, claims
from lvstop.tui.viewmodel import ManagedMap

TTL = 30.0  # seconds between re-reads of the managers' configurations (a reload keeps its pid)


class ManagedLookup:
    """lvstop.managers.claims() per service, re-read at most every TTL seconds and at once when the
    running managers change. Called on a feed's builder thread: it reads /proc and their files."""

    def __init__(
        self,
        netns: str | None = None,
        running: WeightManagers | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.netns = netns
        self.running = running if running is not None else WeightManagers()
        self._clock = clock
        self._cache: tuple[tuple[tuple[str, int], ...], float, ManagedMap, tuple[str, ...]] | None = None

    def __call__(self) -> tuple[ManagedMap, tuple[str, ...]]:
        """(service -> the blocks that name it, a line per manager whose configuration is unreadable)."""
        running = self.running()
        now = self._clock()
        cache = self._cache
        if cache is None or cache[0] != running or not cache[1] <= now < cache[1] + TTL:
            owned, unread = (
                by_service(claims(running, self.running.proc_root, self.netns)) if running else ({}, [])
            )
            cache = self._cache = (running, now, owned, tuple(unread))
        return cache[2], cache[3]
