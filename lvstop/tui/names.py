"""Reverse DNS for the `n` toggle: resolved on daemon threads, cached, never on the UI thread."""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Callable

Resolver = Callable[[str], str | None]

MAX_PENDING = 512  # lookups queued at once; the rest are asked again on a later build


def reverse_dns(address: str) -> str | None:
    try:
        name = socket.gethostbyaddr(address)[0]
    except OSError:
        return None
    return name.split(".")[0] if name else None  # short names fit the columns; the FQDN adds little


class NameCache:
    """`lookup()` answers from the cache at once; misses are resolved in the background.

    Failed lookups are cached too (as None) so an address without a PTR record is asked once.
    `on_resolved` runs on a resolver thread after each answer; the feed uses it to rebuild the views.
    """

    def __init__(
        self,
        resolver: Resolver = reverse_dns,
        on_resolved: Callable[[], None] = lambda: None,
        workers: int = 2,
    ) -> None:
        self._resolver = resolver
        self.on_resolved = on_resolved
        self._cache: dict[str, str | None] = {}
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._workers = workers
        self._started = False

    def lookup(self, address: str) -> str | None:
        with self._lock:
            if address in self._cache:
                return self._cache[address]
            if address in self._pending or len(self._pending) >= MAX_PENDING:
                return None
            self._pending.add(address)
            if not self._started:
                self._started = True
                for i in range(self._workers):
                    # Daemon threads: a DNS server that never answers must not hold up quitting.
                    threading.Thread(target=self._work, name=f"lvstop-dns-{i}", daemon=True).start()
        self._queue.put(address)
        return None

    def _work(self) -> None:
        while True:
            address = self._queue.get()
            try:
                name = self._resolver(address)
            except Exception:  # a resolver bug must not kill the thread and leave lookups pending forever
                name = None
            with self._lock:
                self._cache[address] = name
                self._pending.discard(address)
            self.on_resolved()
