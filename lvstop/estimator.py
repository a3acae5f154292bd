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

`Estimator` keeps one KernelEstimator per key and feeds it timed samples. It returns two rates:

- ewma: the kernel's number. Exact when samples arrive at the kernel's 2 s ticks and the entry was
  first seen with zero counters (just created or zeroed). An entry first seen with history is
  warm-started at the rate of its first measured tick (the kernel's history is unknowable; starting
  from 0 would under-read for ~20 s); from then on the kernel arithmetic runs and any difference to
  the kernel's own value shrinks by 3/4 per tick.
- instant: plain deltas per second over the measured interval, exact for any interval.

The EWMA is meant for 2 s ticks. At another poll interval it advances one kernel step per elapsed
2 s (rounded: 1 s polls step every other poll, 5 s polls 2 or 3 steps), spreading the delta evenly
over the steps; that approximates the kernel, and the instant rate is the exact figure. Long gaps
(suspend) catch up at most MAX_CATCHUP_STEPS steps.

First sample, counter reset (`ipvsadm -Z`, service re-created: any counter going down) and u64
wrap give no rate (None), never a negative number or a spike. After a reset the EWMA restarts from
the kernel's own starting point, avg 0 and counters 0, so it is exact again from the next tick.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from lvstop.model import Counters, Rates, fast_constructor

TICK = 2.0  # seconds between the kernel's estimator runs for one entry
MAX_CATCHUP_STEPS = 32  # (3/4)^32 < 1e-4: older history no longer shows in the average
_U64 = (1 << 64) - 1
_NONE = Rates(0, 0, 0, 0, 0)  # the kernel's read-out of an idle entry
_IDLE = Rates(0.0, 0.0, 0.0, 0.0, 0.0)  # no counter moved over the interval
_S64_SIGN = 1 << 63
# Below 2^54 a delta's `delta << 9` stays under 2^63, so C's u64/s64 casts are identities (fast path).
_FAST_BITS = 54
_new_rates = fast_constructor(Rates)


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
        return _new_rates(
            ((self.cps + 0x1FF) & _U64) >> 10,
            ((self.inpps + 0x1FF) & _U64) >> 10,
            ((self.outpps + 0x1FF) & _U64) >> 10,
            ((self.inbps + 0xF) & _U64) >> 5,
            ((self.outbps + 0xF) & _U64) >> 5,
        )


def _between(a: Counters, b: Counters, num: int, den: int) -> Counters:
    """The counters num/den of the way from a to b (integer, reaching b exactly at num == den)."""
    return Counters(
        a.conns + (b.conns - a.conns) * num // den,
        a.inpkts + (b.inpkts - a.inpkts) * num // den,
        a.outpkts + (b.outpkts - a.outpkts) * num // den,
        a.inbytes + (b.inbytes - a.inbytes) * num // den,
        a.outbytes + (b.outbytes - a.outbytes) * num // den,
    )


def _per_step(a: Counters, b: Counters, steps: int) -> Counters:
    return Counters(
        (b.conns - a.conns) // steps,
        (b.inpkts - a.inpkts) // steps,
        (b.outpkts - a.outpkts) // steps,
        (b.inbytes - a.inbytes) // steps,
        (b.outbytes - a.outbytes) // steps,
    )


_ZERO = Counters()
_NO_AVG = (0, 0, 0, 0, 0)


@dataclass(slots=True)
class _Entry:
    """One key's kernel estimator (its last counters are `base`, its averages `avg`) and what
    sampling it needs besides. One tuple for the averages: the hot path reads and writes it once."""

    base: Counters  # counters at the last EWMA step (or at the start): the kernel's last_*
    prev: Counters  # counters at the last sample
    prev_time: float
    step_time: float  # when the last EWMA step was due
    warm: bool  # first step still to come, and it warm-starts the average
    gen: int  # the sweep generation that last saw this key
    avg: tuple[int, int, int, int, int] = _NO_AVG  # cps, inpps, outpps, inbps, outbps, scaled
    ewma: Rates | None = None  # the last read-out

    def kernel(self) -> KernelEstimator:
        """This entry as the kernel's struct, for the exact arithmetic of the rare paths."""
        b = self.base
        return KernelEstimator(
            b.conns & _U64, b.inpkts & _U64, b.outpkts & _U64, b.inbytes & _U64, b.outbytes & _U64, *self.avg
        )

    def load(self, k: KernelEstimator, counters: Counters) -> None:
        """Take the averages of `k`, which has just stepped to `counters`."""
        self.avg = (k.cps, k.inpps, k.outpps, k.inbps, k.outbps)
        self.ewma = k.read()
        self.base = counters


class Estimator:
    """Per-key EWMA and instant rates from timed counter samples. Pure: time is an argument.

    Keys are whatever identifies an entry (the poller's are tuples of the service's and the dest's
    key fields, see lvstop.poller.service_key and dest_key, and "totals"). sweep() forgets the keys
    not seen since the last sweep.
    """

    def __init__(self, tick: float = TICK) -> None:
        self.tick = tick
        # One step is due 1.5..3.5 ticks -> 1 step (see _advance); the usual case tested inline.
        self._step_lo = tick * 0.75
        self._step_hi = tick * 1.75
        self._half = tick / 2
        self._entries: dict[Hashable, _Entry] = {}
        self._gen = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def update(
        self, key: Hashable, counters: Counters, mono_time: float, kernel_rates: bool = False
    ) -> tuple[Rates | None, Rates | None]:
        """Feed one sample; returns (ewma, instant), both None on a first sample or a reset.

        kernel_rates: the source gave the kernel's own rates with these counters (netlink), so no
        EWMA is computed (ewma None); should they stop coming, the EWMA warm-starts from here.
        """
        e = self._entries.get(key)
        if e is None:
            # Fresh (all zero) or not, the counters are the baseline (ip_vs_zero_estimator); an
            # entry with history warm-starts at its first measured tick.
            self._entries[key] = _Entry(
                counters, counters, mono_time, mono_time, kernel_rates or counters != _ZERO, self._gen
            )
            return None, None
        dt = mono_time - e.prev_time
        if dt < 0:  # time went back (a replay rewound, another exporter answered): a new baseline
            del self._entries[key]
            return self.update(key, counters, mono_time, kernel_rates)
        e.gen = self._gen
        if dt == 0:  # the same sample again: nothing measurable
            return e.ewma, None
        p = e.prev
        e.prev = counters
        e.prev_time = mono_time
        if counters is p:  # the very object of the last sample (a source handing out what did not change)
            d_conns = d_inpkts = d_outpkts = d_inbytes = d_outbytes = 0
            instant = _IDLE
        else:
            d_conns = counters.conns - p.conns
            d_inpkts = counters.inpkts - p.inpkts
            d_outpkts = counters.outpkts - p.outpkts
            d_inbytes = counters.inbytes - p.inbytes
            d_outbytes = counters.outbytes - p.outbytes
            moved = d_conns | d_inpkts | d_outpkts | d_inbytes | d_outbytes  # < 0 iff one is, 0 iff all are
            if moved < 0:
                # Reset or wrap: restart where the kernel does, at avg 0 and counters 0.
                e.avg, e.base, e.warm, e.ewma = _NO_AVG, _ZERO, False, None
                self._advance(e, counters, mono_time)
                return None, None
            # Most entries of a big director moved nothing: they share one object instead of allocating.
            instant = (
                _new_rates(d_conns / dt, d_inpkts / dt, d_outpkts / dt, d_inbytes / dt, d_outbytes / dt)
                if moved
                else _IDLE
            )
        if kernel_rates:
            # Only a baseline to keep, for a warm start should the kernel's rates stop coming.
            e.base, e.step_time, e.warm, e.ewma = counters, mono_time, True, None
            return None, instant
        if e.warm or not self._step_lo <= mono_time - e.step_time < self._step_hi:
            self._advance(e, counters, mono_time)
            return e.ewma, instant
        # One kernel step due: the usual case, inlined (see _advance for the rest).
        step_time = e.step_time + self.tick
        e.step_time = mono_time if abs(mono_time - step_time) > self._half else step_time
        b = e.base
        if b is not p:  # polls faster than ticks: the kernel's deltas run from the last step
            d_conns = counters.conns - b.conns
            d_inpkts = counters.inpkts - b.inpkts
            d_outpkts = counters.outpkts - b.outpkts
            d_inbytes = counters.inbytes - b.inbytes
            d_outbytes = counters.outbytes - b.outbytes
        elif counters is p and e.ewma is _NONE:  # idle and all averages 0: they stay 0
            return _NONE, instant
        cps, inpps, outpps, inbps, outbps = e.avg
        if (d_conns | d_inpkts | d_outpkts | d_inbytes | d_outbytes) >> _FAST_BITS or (
            cps | inpps | outpps | inbps | outbps
        ) >> 63:
            k = e.kernel()
            k.tick(counters)
            e.load(k, counters)
            return e.ewma, instant
        # Deltas in [0, 2^54) and averages in [0, 2^63): C's casts in KernelEstimator.tick change
        # nothing, Python's >> floors like the arithmetic shift of a negative s64, and the new
        # averages (between the old ones and the rates) stay below 2^63, so the read-out's u64 sums
        # cannot wrap either: the same numbers without the masks.
        cps += ((d_conns << 9) - cps) >> 2
        inpps += ((d_inpkts << 9) - inpps) >> 2
        outpps += ((d_outpkts << 9) - outpps) >> 2
        inbps += ((d_inbytes << 4) - inbps) >> 2
        outbps += ((d_outbytes << 4) - outbps) >> 2
        e.avg = (cps, inpps, outpps, inbps, outbps)
        e.base = counters
        e.ewma = (
            _new_rates(
                (cps + 0x1FF) >> 10,
                (inpps + 0x1FF) >> 10,
                (outpps + 0x1FF) >> 10,
                (inbps + 0xF) >> 5,
                (outbps + 0xF) >> 5,
            )
            if cps | inpps | outpps | inbps | outbps
            else _NONE
        )
        return e.ewma, instant

    def _advance(self, e: _Entry, counters: Counters, now: float) -> None:
        """Run the kernel steps due since the last one, splitting the counter delta evenly."""
        tick = self.tick
        steps = int((now - e.step_time) / tick + 0.25)  # 1.5..3.5 ticks -> 1 step, and so on
        if steps <= 0:
            return
        e.step_time += steps * tick
        if abs(now - e.step_time) > self._half:  # the poll cadence drifted from ours: resync
            e.step_time = now
        if e.warm:
            k = KernelEstimator.steady(counters, _per_step(e.base, counters, steps))
            e.warm = False
        else:
            k = e.kernel()
            skipped = max(0, steps - MAX_CATCHUP_STEPS)
            if skipped:
                k.rebase(_between(e.base, counters, skipped, steps))
            for i in range(skipped + 1, steps):
                k.tick(_between(e.base, counters, i, steps))
            k.tick(counters)
        e.load(k, counters)

    def touch(self, key: Hashable) -> None:
        """Keep `key` through the next sweep without a sample (its read was incomplete)."""
        e = self._entries.get(key)
        if e is not None:
            e.gen = self._gen

    def sweep(self) -> None:
        """Forget the keys neither updated nor touched since the last sweep (vanished entries)."""
        gen = self._gen
        for k in [k for k, e in self._entries.items() if e.gen != gen]:
            del self._entries[k]
        self._gen = gen + 1
