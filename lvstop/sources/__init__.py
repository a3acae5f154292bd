"""Where snapshots come from. Every source returns raw cumulative state; none computes rates."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from lvstop.model import Snapshot


class Source(Protocol):
    """What the poller needs from a source."""

    name: str

    def read(self) -> Snapshot:
        """One full read. Partial failures go into Snapshot.issues; total failure raises SourceError."""
        ...

    def conn_lines(self, sync: bool = False) -> Iterator[str]:
        """Lines of /proc/net/ip_vs_conn (or ip_vs_conn_sync), header included, streamed."""
        ...

    def close(self) -> None: ...
