"""Rates from cumulative counters, computed the way the kernel computes them.

The kernel (net/netfilter/ipvs/ip_vs_est.c, unchanged in substance from 2.6 to 6.x) keeps, per service,
per dest and for the totals, a `struct ip_vs_estimator` of u64 fields. Every 2 s it reads the counters
and, for each of the five counters::

    rate = (counter - last) << 9          # conns, packets: per-2 s delta scaled to 2^10 per second
    rate = (counter - last) << 4          # bytes: scaled to 2^5 per second
    last = counter
    avg += ((s64)rate - (s64)avg) >> 2    # EWMA with weight 1/4; >> of a negative s64 is arithmetic

and `ip_vs_read_estimator` reports `(avg + 0x1FF) >> 10` (cps, pps) or `(avg + 0xF) >> 5` (bytes/s),
all in u64. `ip_vs_zero_estimator` (service creation, `ipvsadm -Z`) sets last = the counters and avg = 0.
`KernelEstimator` is that struct, bit for bit, including u64 wrap-around.

`Estimator` keeps that struct for every entry of a table (the dests of a snapshot, its services, the
totals) as columns, and steps them all at once from one timed sample of the whole table. It gives two
rates:

- ewma: the kernel's number. Exact when samples arrive at the kernel's 2 s ticks and the entry was
  first seen with zero counters (just created or zeroed). An entry first seen with history is
  warm-started at the rate of its first measured tick (the kernel's history is unknowable; starting
  from 0 would under-read for ~20 s); from then on the kernel arithmetic runs and any difference to
  the kernel's own value shrinks by 3/4 per tick.
- instant: plain deltas per second over the measured interval, exact for any interval.

The EWMA is meant for 2 s ticks. At another poll interval it advances one kernel step per elapsed
2 s (rounded: 1 s polls step every other poll, 5 s polls 2 or 3 steps), spreading the delta evenly
over the steps; that approximates the kernel, and the instant rate is the exact figure. Long gaps
(suspend) catch up at most MAX_CATCHUP_STEPS steps. One step (the usual poll) runs on whole columns
in numpy's u64/s64 arithmetic, which wraps as C does; so do several steps, for the rows due as many.

First sample, counter reset (`ipvsadm -Z`, service re-created: any counter going down) and u64
wrap give no rate (None), never a negative number or a spike. After a reset the EWMA restarts from
the kernel's own starting point, avg 0 and counters 0, so it is exact again from the next tick.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lvstop.model import U64, Array, Counters, Rates, align

TICK = 2.0  # seconds between the kernel's estimator runs for one entry
MAX_CATCHUP_STEPS = 32  # (3/4)^32 < 1e-4: older history no longer shows in the average
_U64 = (1 << 64) - 1
_NONE = Rates(0, 0, 0, 0, 0)  # the kernel's read-out of an idle entry
_S64_SIGN = 1 << 63


def _s64(x: int) -> int:
    return x - (1 << 64) if x & _S64_SIGN else x


def _step(avg: int, delta: int, shift: int) -> int:
    """One `avg += ((s64)rate - (s64)avg) >> 2` with C's u64/s64 semantics (the kernel builds with
    -fno-strict-overflow, so s64 overflow wraps)."""
    rate = (delta << shift) & _U64
    diff = _s64((_s64(rate) - _s64(avg)) & _U64)
    return (avg + (diff >> 2)) & _U64


@dataclass(slots=True)
class KernelEstimator:
    """`struct ip_vs_estimator`: the counters seen at the last tick and the five scaled averages."""

    last_conns: int = 0
    last_inpkts: int = 0
    last_outpkts: int = 0
    last_inbytes: int = 0
    last_outbytes: int = 0
    cps: int = 0  # 2^10 per second
    inpps: int = 0
    outpps: int = 0
    inbps: int = 0  # 2^5 bytes per second
    outbps: int = 0

    @classmethod
    def zeroed(cls, counters: Counters) -> KernelEstimator:
        """ip_vs_zero_estimator: the counters become the baseline, the averages 0."""
        return cls(counters.conns, counters.inpkts, counters.outpkts, counters.inbytes, counters.outbytes)

    @classmethod
    def steady(cls, counters: Counters, per_tick: Counters) -> KernelEstimator:
        """An estimator that has seen `per_tick` in every tick for ever (avg at its fixed point)."""
        return cls(
            counters.conns,
            counters.inpkts,
            counters.outpkts,
            counters.inbytes,
            counters.outbytes,
            (per_tick.conns << 9) & _U64,
            (per_tick.inpkts << 9) & _U64,
            (per_tick.outpkts << 9) & _U64,
            (per_tick.inbytes << 4) & _U64,
            (per_tick.outbytes << 4) & _U64,
        )

    def tick(self, c: Counters) -> Rates:
        """One run of the kernel's estimator over counters `c`; returns the read-out after it."""
        self.cps = _step(self.cps, (c.conns - self.last_conns) & _U64, 9)
        self.inpps = _step(self.inpps, (c.inpkts - self.last_inpkts) & _U64, 9)
        self.outpps = _step(self.outpps, (c.outpkts - self.last_outpkts) & _U64, 9)
        self.inbps = _step(self.inbps, (c.inbytes - self.last_inbytes) & _U64, 4)
        self.outbps = _step(self.outbps, (c.outbytes - self.last_outbytes) & _U64, 4)
        self.last_conns = c.conns & _U64
        self.last_inpkts = c.inpkts & _U64
        self.last_outpkts = c.outpkts & _U64
        self.last_inbytes = c.inbytes & _U64
        self.last_outbytes = c.outbytes & _U64
        return self.read()

    def rebase(self, c: Counters) -> None:
        """Take `c` as the last tick's counters without averaging (ticks skipped on a long gap)."""
        self.last_conns, self.last_inpkts, self.last_outpkts = c.conns, c.inpkts, c.outpkts
        self.last_inbytes, self.last_outbytes = c.inbytes, c.outbytes

    def read(self) -> Rates:
        """ip_vs_read_estimator: rounded per-second rates, bytes per second for the byte rates."""
        if not (self.cps | self.inpps | self.outpps | self.inbps | self.outbps):
            return _NONE  # an idle entry: one shared object
        return Rates(
            ((self.cps + 0x1FF) & _U64) >> 10,
            ((self.inpps + 0x1FF) & _U64) >> 10,
            ((self.outpps + 0x1FF) & _U64) >> 10,
            ((self.inbps + 0xF) & _U64) >> 5,
            ((self.outbps + 0xF) & _U64) >> 5,
        )


# conns and packets are scaled by 2^9 per tick (2^10 per second), bytes by 2^4 (2^5 per second)
_SHIFT = np.array([9, 9, 9, 4, 4], U64)
_ROUND = np.array([0x1FF, 0x1FF, 0x1FF, 0xF, 0xF], U64)
_OUT = np.array([10, 10, 10, 5, 5], U64)


def read_out(avg: Array) -> Array:
    """ip_vs_read_estimator over (n, 5) u64 averages: the rounded integer rates."""
    return (avg + _ROUND) >> _OUT


def kernel_step(avg: Array, delta: Array) -> Array:
    """One `avg += ((s64)rate - (s64)avg) >> 2` per value, rate = delta scaled, in C's u64/s64 wrap."""
    rate = (delta << _SHIFT).view(np.int64)
    return (avg.view(np.int64) + ((rate - avg.view(np.int64)) >> 2)).view(U64)


@dataclass(frozen=True, slots=True, eq=False)
class Estimate:
    """What one update gives each row: the EWMA read-out and the instant rates, each with a flag
    (False = None: first sample, reset, or the source gave the kernel's own rates)."""

    ewma: Array  # (n, 5) u64
    has_ewma: Array  # bool
    instant: Array  # (n, 5) float64
    has_instant: Array  # bool


@dataclass(slots=True)
class _State:
    """Every entry's estimator, one row per key (see Estimator)."""

    keys: Array  # voids, unique
    prev: Array  # (n, 5) u64: counters at the last sample
    prev_time: Array  # float64
    base: Array  # (n, 5) u64: counters at the last EWMA step (the kernel's last_*)
    step_time: Array  # float64: when the last EWMA step was due
    warm: Array  # bool: first step still to come, and it warm-starts the average
    avg: Array  # (n, 5) u64: cps, inpps, outpps, inbps, outbps, scaled
    ewma: Array  # (n, 5) u64: the last read-out
    has_ewma: Array  # bool

    @classmethod
    def empty(cls, keys: Array) -> _State:
        n = len(keys)

        def z() -> Array:
            return np.zeros((n, 5), U64)

        return cls(keys, z(), np.zeros(n), z(), np.zeros(n), np.zeros(n, bool), z(), z(), np.zeros(n, bool))

    def take(self, rows: Array) -> _State:
        return _State(*(getattr(self, name)[rows] for name in _STATE_FIELDS))

    @staticmethod
    def concat(a: _State, b: _State) -> _State:
        return _State(*(np.concatenate([getattr(a, n), getattr(b, n)]) for n in _STATE_FIELDS))


_STATE_FIELDS = tuple(_State.__dataclass_fields__)


class Estimator:
    """EWMA and instant rates for the entries of one table, from timed samples of the whole table.
    Pure: time is an argument.

    Each update names its entries by keys (voids: equal bytes, same entry) and replaces the set of
    entries: those not in it are forgotten unless `keep` holds them (a read that was incomplete).
    """

    def __init__(self, tick: float = TICK) -> None:
        self.tick = tick
        self._half = tick / 2
        self._state = _State.empty(np.zeros(0, "V1"))

    def __len__(self) -> int:
        return len(self._state.keys)

    @property
    def keys(self) -> Array:
        return self._state.keys

    def update(
        self,
        keys: Array,
        counters: Array,
        mono_time: float,
        kernel_rates: Array | bool = False,
        keep: Array | None = None,
    ) -> Estimate:
        """Feed one sample of every entry: keys (n,), counters (n, 5) u64 at mono_time.

        kernel_rates (per row or for all): the source gave the kernel's own rates with these counters
        (netlink), so no EWMA is computed; should they stop coming, the EWMA warm-starts from there.
        keep: a mask over `keys` of the previous update: entries to keep without a sample.
        """
        old = self._state
        n = len(keys)
        t = mono_time
        kern = np.broadcast_to(np.asarray(kernel_rates, bool), (n,))
        counters = np.ascontiguousarray(counters, U64)
        match = _match(old.keys, keys)
        s = old.take(np.maximum(match, 0)) if len(old.keys) else _State.empty(keys)
        s.keys = keys
        dt = t - s.prev_time
        # A new entry, or time went back (a replay rewound, another exporter answered): a new baseline.
        new = (match < 0) | (dt < 0)
        if new.any():
            s.prev[new] = s.base[new] = counters[new]
            s.prev_time[new] = s.step_time[new] = t
            s.warm[new] = kern[new] | counters[new].any(axis=1)
            s.avg[new] = s.ewma[new] = 0
            s.has_ewma[new] = False
        sampled = ~new & (dt > 0)  # dt == 0: the same sample again, nothing measurable
        delta = counters - s.prev
        down = sampled & (counters < s.prev).any(axis=1)
        instant = delta.astype(np.float64) / np.where(sampled, dt, 1.0)[:, None]
        has_instant = sampled & ~down
        s.prev[sampled] = counters[sampled]
        s.prev_time[sampled] = t
        if down.any():
            # Reset or wrap: restart where the kernel does, at avg 0 and counters 0.
            s.avg[down] = s.base[down] = 0
            s.warm[down] = s.has_ewma[down] = False
        by_kernel = has_instant & kern
        # Only a baseline to keep, for a warm start should the kernel's rates stop coming.
        s.base[by_kernel] = counters[by_kernel]
        s.step_time[by_kernel] = t
        s.warm[by_kernel] = True
        s.has_ewma[by_kernel] = False
        self._advance(s, counters, t, (has_instant & ~kern) | down)
        if keep is not None and keep.any():
            kept = np.flatnonzero(keep)
            kept = kept[~np.isin(kept, match)]
            s = _State.concat(s, old.take(kept))
        self._state = s
        return Estimate(
            s.ewma[:n],
            s.has_ewma[:n] & ~down & ~new,
            np.where(has_instant[:, None], instant, 0.0),
            has_instant,
        )

    def _advance(self, s: _State, counters: Array, t: float, due: Array) -> None:
        """Run the kernel steps due since the last one for the `due` rows."""
        tick = self.tick
        steps = np.trunc((t - s.step_time) / tick + 0.25)  # 1.5..3.5 ticks -> 1 step, and so on
        due = due & (steps > 0)
        if not due.any():
            return
        step_time = s.step_time + steps * tick
        drift = np.abs(t - step_time) > self._half  # the poll cadence drifted from ours: resync
        s.step_time[due] = np.where(drift, t, step_time)[due]
        one = np.flatnonzero(due & (steps == 1))
        if len(one):
            c = counters[one]
            delta = c - s.base[one]
            warm = s.warm[one]
            # a warm start sits at the average of a steady stream of `delta` per tick
            avg = np.where(warm[:, None], delta << _SHIFT, kernel_step(s.avg[one], delta))
            s.avg[one] = avg
            s.ewma[one] = read_out(avg)
            s.has_ewma[one] = True
            s.warm[one] = False
            s.base[one] = c
        many = due & (steps > 1)
        for k in np.unique(steps[many]).astype(int).tolist():
            self._catch_up(s, np.flatnonzero(many & (steps == k)), counters, k)

    @staticmethod
    def _catch_up(s: _State, rows: Array, counters: Array, steps: int) -> None:
        """`steps` kernel steps for `rows` (a slow cadence or a gap), their delta split evenly between
        the steps; at most MAX_CATCHUP_STEPS of them run, the ones before only move the baseline."""
        base, c = s.base[rows], counters[rows]
        delta = c - base  # >= 0: counters that went down were reset to a base of 0
        q, r = np.divmod(delta, U64(steps))

        def between(j: int) -> Array:
            """The counters j/steps of the way from base to c: base + delta * j // steps, exactly."""
            return base + q * U64(j) + r * U64(j) // U64(steps)

        skipped = max(0, steps - MAX_CATCHUP_STEPS)
        avg, last = s.avg[rows], between(skipped)
        for j in range(skipped + 1, steps + 1):
            now = between(j)
            avg = kernel_step(avg, now - last)
            last = now
        # a warm start sits at the average of a steady stream of delta / steps per tick
        avg = np.where(s.warm[rows][:, None], q << _SHIFT, avg)
        s.avg[rows] = avg
        s.ewma[rows] = read_out(avg)
        s.has_ewma[rows] = True
        s.warm[rows] = False
        s.base[rows] = c


def counters_row(c: Counters) -> tuple[int, int, int, int, int]:
    return (c.conns, c.inpkts, c.outpkts, c.inbytes, c.outbytes)


def _match(prev: Array, cur: Array) -> Array:
    if len(prev) == 0 or prev.dtype != cur.dtype:
        return np.full(len(cur), -1, np.intp)
    return align(prev, cur)
