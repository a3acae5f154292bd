"""Ring buffers behind the sparklines (services, dests, director totals) and drains' active connections."""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence

from lvstop.model import DestKey, Rates, ServiceKey, Snapshot
from lvstop.tui import units
from lvstop.tui.viewmodel.table import Column

TREND_WIDTH = 10
DRAIN_DEPTH = 30  # polls of a drain's active connections kept for its note (a minute at 2 s)
HISTORY_DEPTH = 120  # samples: 4 minutes at the default 2 s tick


class History:
    """Ring buffers of conns/s per service, per dest and for the director, fed once per poll.

    Dests are keyed by (address, port) inside their service's dict: hashing a frozen dataclass key
    per dest per poll cost most of a build at 100k dests.
    """

    TOTAL_CPS, TOTAL_PPS, TOTAL_BPS = "total-cps", "total-pps", "total-bps"

    def __init__(self, depth: int = HISTORY_DEPTH, trend_depth: int = TREND_WIDTH) -> None:
        self._depth = depth
        self._trend_depth = trend_depth
        self._services: dict[ServiceKey, deque[float]] = {}
        self._dests: dict[ServiceKey, dict[tuple[str, int], deque[float]]] = {}
        self._totals: dict[str, deque[float]] = {}
        self._draining: dict[tuple[ServiceKey, str, int], deque[float]] = {}  # active conns of weight-0 dests
        self._seq: int | None = None

    def record(self, snap: Snapshot) -> None:
        if snap.seq == self._seq:
            return
        self._seq = snap.seq
        depth = self._trend_depth
        services, dests = self._services, self._dests
        draining: dict[tuple[ServiceKey, str, int], deque[float]] = {}
        for svc in snap.services:
            skey = svc.key
            _push(services, skey, svc.rates, depth)
            inner = dests.get(skey)
            if inner is None:
                inner = dests[skey] = {}
            for d in svc.dests:
                r = d.rates
                buf = inner.get((d.address, d.port))
                if buf is None:
                    buf = inner[(d.address, d.port)] = deque(maxlen=depth)
                if r is not None:  # no rate yet (first poll, counters reset): a gap, not a dip to zero
                    buf.append(r.cps)
                if d.weight == 0:  # drains are few: follow their active connections too
                    key = (skey, d.address, d.port)
                    drain = draining[key] = self._draining.get(key) or deque(maxlen=DRAIN_DEPTH)
                    drain.append(d.active_conns)
            if len(inner) > 2 * len(svc.dests) + 4:  # dests came and went: forget the gone ones
                keep = {(d.address, d.port) for d in svc.dests}
                dests[skey] = {k: v for k, v in inner.items() if k in keep}
        self._draining = draining
        if len(services) > 2 * len(snap.services) + 4:
            keep_s = {s.key for s in snap.services}
            self._services = {k: v for k, v in services.items() if k in keep_s}
            self._dests = {k: v for k, v in dests.items() if k in keep_s}
        tr = snap.total_rates
        if tr is not None:
            for name, value in (
                (self.TOTAL_CPS, tr.cps),
                (self.TOTAL_PPS, tr.inpps + tr.outpps),
                (self.TOTAL_BPS, tr.inbps + tr.outbps),
            ):
                self._totals.setdefault(name, deque(maxlen=self._depth)).append(value)

    def copy(self) -> History:
        other = History(self._depth, self._trend_depth)
        other._services = {k: deque(v, maxlen=v.maxlen) for k, v in self._services.items()}
        other._dests = {
            k: {dk: deque(v, maxlen=v.maxlen) for dk, v in inner.items()} for k, inner in self._dests.items()
        }
        other._totals = {k: deque(v, maxlen=v.maxlen) for k, v in self._totals.items()}
        other._draining = {k: deque(v, maxlen=v.maxlen) for k, v in self._draining.items()}
        other._seq = self._seq
        return other

    def service(self, key: ServiceKey) -> Sequence[float]:
        return self._services.get(key, ())

    def dest(self, skey: ServiceKey, dkey: DestKey) -> Sequence[float]:
        return self._dests.get(skey, {}).get((dkey.address, dkey.port), ())

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
