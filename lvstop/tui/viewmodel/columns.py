"""Per-service sums over a snapshot's dest columns: what the services view, the header and the side-by-side
tab show of the dests without making a row per dest (issue 9: rows only for what a screen shows)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from lvstop.model import Array, Table, address_text, format_hostport


@dataclass(frozen=True, slots=True, eq=False)
class ServiceSums:
    """One entry per service of a Table, in its order (int64 arrays)."""

    dests: Array
    live: Array  # dests with weight > 0
    active: Array
    inactive: Array
    persist: Array  # sum of the known persistence counts
    persist_known: Array  # how many dests say their persistence count (/proc cannot)

    def persist_of(self, i: int) -> int | None:
        """None when no dest of a service with dests says its count."""
        return int(self.persist[i]) if self.persist_known[i] or not self.dests[i] else None


_last: tuple[Table, ServiceSums] | None = None
_lock = threading.Lock()


def service_sums(table: Table) -> ServiceSums:
    """The sums of `table` (remembered for the last table: the header and the tables of one build ask)."""
    global _last
    with _lock:
        if _last is not None and _last[0] is table:
            return _last[1]
    d, starts = table.dests, table.starts

    def per_service(column: Array) -> Array:
        ends = np.concatenate(([0], np.cumsum(column, dtype=np.int64)))
        out: Array = ends[starts[1:]] - ends[starts[:-1]]
        return out

    known = d.persist >= 0
    sums = ServiceSums(
        np.diff(starts).astype(np.int64),
        per_service(d.weight > 0),
        per_service(d.active),
        per_service(d.inactive),
        per_service(np.where(known, d.persist, 0)),
        per_service(known),
    )
    with _lock:
        _last = (table, sums)
    return sums


def dest_addresses(table: Table, i: int) -> list[tuple[int, str, int]]:
    """(family, address, port) of each dest of service i, in table order."""
    d, lo, hi = table.dests, int(table.starts[i]), int(table.starts[i + 1])
    family, raw, port = d.family[lo:hi].tolist(), d.addr[lo:hi].tolist(), d.port[lo:hi].tolist()
    return [(f, address_text(f, a), p) for f, a, p in zip(family, raw, port, strict=True)]


def dest_texts(table: Table, i: int) -> list[str]:
    """`address:port` of each dest of service i, as DestKey prints it (for the services filter)."""
    return [format_hostport(f, a, p) for f, a, p in dest_addresses(table, i)]
