"""Ring buffers behind the sparklines (services, dests, director totals) and drains' active connections."""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence

import numpy as np

from lvstop.model import (
    DEST_KEY_BYTES,
    Array,
    DestKey,
    Rates,
    ServiceKey,
    Snapshot,
    Table,
    address_text,
    align,
)
from lvstop.tui import units
from lvstop.tui.viewmodel.columns import dest_addresses
from lvstop.tui.viewmodel.table import Column

TREND_WIDTH = 10
DRAIN_DEPTH = 30  # polls of a drain's active connections kept for its note (a minute at 2 s)
HISTORY_DEPTH = 120  # samples: 4 minutes at the default 2 s tick


class History:
    """Ring buffers of conns/s per service, per dest and for the director, fed once per poll.

    The dests' rings are one array, a row per dest of the last snapshot recorded, moved along by key when
    dests come and go: a deque per dest cost ~0.6 kB and a Python loop over every dest per poll.
    """

    TOTAL_CPS, TOTAL_PPS, TOTAL_BPS = "total-cps", "total-pps", "total-bps"

    def __init__(self, depth: int = HISTORY_DEPTH, trend_depth: int = TREND_WIDTH) -> None:
        self._depth = depth
        self._trend_depth = trend_depth
        self._services: dict[ServiceKey, deque[float]] = {}
        self._table: Table | None = None  # the dests' rows below are this table's
        self._dest_keys: Array = np.zeros(0, f"V{DEST_KEY_BYTES}")
        self._dest_cps: Array = np.zeros((0, trend_depth), np.int64)  # newest last, right-aligned
        self._dest_len: Array = np.zeros(0, np.int64)  # how many of a row's values are samples
        self._dest_rows: dict[ServiceKey, dict[tuple[str, int], int]] = {}  # of services asked about
        self._totals: dict[str, deque[float]] = {}
        self._draining: dict[tuple[ServiceKey, str, int], deque[float]] = {}  # active conns of weight-0 dests
        self._seq: int | None = None

    def record(self, snap: Snapshot) -> None:
        if snap.seq == self._seq:
            return
        self._seq = snap.seq
        table = snap.table
        services = self._services
        for svc in table.services:
            _push(services, svc.key, svc.rates, self._trend_depth)
        if len(services) > 2 * len(table.services) + 4:  # services came and went: forget the gone ones
            keep = {s.key for s in table.services}
            self._services = {k: v for k, v in services.items() if k in keep}
        self._record_dests(table)
        tr = snap.total_rates
        if tr is not None:
            for name, value in (
                (self.TOTAL_CPS, tr.cps),
                (self.TOTAL_PPS, tr.inpps + tr.outpps),
                (self.TOTAL_BPS, tr.inbps + tr.outbps),
            ):
                self._totals.setdefault(name, deque(maxlen=self._depth)).append(value)

    def _record_dests(self, table: Table) -> None:
        d, keys = table.dests, table.dest_keys()
        cps, lengths = self._dest_cps, self._dest_len
        old = align(self._dest_keys, keys)
        if len(old) != len(cps) or not (old == np.arange(len(old))).all():  # dests came, went or moved
            found = old >= 0
            cps = np.zeros((len(keys), self._trend_depth), np.int64)
            lengths = np.zeros(len(keys), np.int64)
            cps[found] = self._dest_cps[old[found]]
            lengths[found] = self._dest_len[old[found]]
        rated = np.flatnonzero(d.has_rates)  # no rate yet (first poll, counters reset): a gap, not a dip
        if len(rated) == len(cps):
            cps[:, :-1] = cps[:, 1:]
            cps[:, -1] = d.rates[:, 0]
        elif len(rated):
            cps[rated, :-1] = cps[rated, 1:]
            cps[rated, -1] = d.rates[rated, 0]
        lengths[rated] = np.minimum(lengths[rated] + 1, self._trend_depth)
        self._table, self._dest_keys, self._dest_cps, self._dest_len = table, keys, cps, lengths
        self._dest_rows = {}
        draining: dict[tuple[ServiceKey, str, int], deque[float]] = {}
        for r in np.flatnonzero(d.weight == 0).tolist():  # drains are few: follow their active conns too
            key = (
                table.services[d.service[r]].key,
                address_text(int(d.family[r]), d.addr[r].tobytes()),
                int(d.port[r]),
            )
            drain = draining[key] = self._draining.get(key) or deque(maxlen=DRAIN_DEPTH)
            drain.append(int(d.active[r]))
        self._draining = draining

    def copy(self) -> History:
        other = History(self._depth, self._trend_depth)
        other._services = {k: deque(v, maxlen=v.maxlen) for k, v in self._services.items()}
        other._table, other._dest_keys = self._table, self._dest_keys
        other._dest_cps, other._dest_len = self._dest_cps.copy(), self._dest_len.copy()
        other._totals = {k: deque(v, maxlen=v.maxlen) for k, v in self._totals.items()}
        other._draining = {k: deque(v, maxlen=v.maxlen) for k, v in self._draining.items()}
        other._seq = self._seq
        return other

    def service(self, key: ServiceKey) -> Sequence[float]:
        return self._services.get(key, ())

    def dest(self, skey: ServiceKey, dkey: DestKey) -> Sequence[float]:
        rows = self._dest_rows.get(skey)
        if rows is None:
            rows = self._dest_rows[skey] = self._rows_of(skey)
        r = rows.get((dkey.address, dkey.port))
        if r is None:
            return ()
        n = int(self._dest_len[r])
        values: list[float] = self._dest_cps[r, self._trend_depth - n :].tolist()
        return values

    def _rows_of(self, skey: ServiceKey) -> dict[tuple[str, int], int]:
        """(address, port) -> ring row, for the dests of one service (those a screen shows)."""
        t = self._table
        i = t.index(skey) if t is not None else None
        if t is None or i is None:
            return {}
        lo = int(t.starts[i])
        return {(a, p): lo + k for k, (_, a, p) in enumerate(dest_addresses(t, i))}

    def draining(self, skey: ServiceKey, dkey: DestKey) -> Sequence[float]:
        """Active connections of a weight-0 dest, poll by poll since it went to 0 (last DRAIN_DEPTH)."""
        return self._draining.get((skey, dkey.address, dkey.port), ())

    def total(self, name: str) -> Sequence[float]:
        return self._totals.get(name, ())


def _push(series: dict[ServiceKey, deque[float]], key: ServiceKey, r: Rates | None, depth: int) -> None:
    buf = series.get(key)
    if buf is None:
        buf = series[key] = deque(maxlen=depth)
    if r is not None:
        buf.append(r.cps)


def with_trend_scale(columns: tuple[Column, ...], top: float, human: bool) -> tuple[Column, ...]:
    """The Trend column's title says the top of its one scale (conn/s): bars are comparable row to row."""
    title = f"Trend 0-{units.count(top, human=human)}/s" if top > 0 else "Trend"
    return tuple(dataclasses.replace(c, title=title) if c.id == "trend" else c for c in columns)
