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

from lvstop.model import Counters, Rates

TICK = 2.0  # seconds between the kernel's estimator runs for one entry
MAX_CATCHUP_STEPS = 32  # (3/4)^32 < 1e-4: older history no longer shows in the average
_U64 = (1 << 64) - 1
_NONE = Rates(0, 0, 0, 0, 0)  # the kernel's read-out of an idle entry
_IDLE = Rates(0.0, 0.0, 0.0, 0.0, 0.0)  # no counter moved over the interval
_S64_SIGN = 1 << 63
# Below 2^54 a delta's `delta << 9` stays under 2^63, so C's u64/s64 casts are identities (fast path).
_FAST_BITS = 54


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

    def tick(self, c: Counters) -> None:
        """One run of the kernel's estimator over counters `c`."""
        d_conns = c.conns - self.last_conns
        d_inpkts = c.inpkts - self.last_inpkts
        d_outpkts = c.outpkts - self.last_outpkts
        d_inbytes = c.inbytes - self.last_inbytes
        d_outbytes = c.outbytes - self.last_outbytes
        if (d_conns | d_inpkts | d_outpkts | d_inbytes | d_outbytes) >> _FAST_BITS == 0 and (
            self.cps | self.inpps | self.outpps | self.inbps | self.outbps
        ) >> 63 == 0:
            # Deltas in [0, 2^54) and averages in [0, 2^63): C's casts change nothing, and Python's
            # >> floors like the arithmetic shift of a negative s64.
            self.cps += ((d_conns << 9) - self.cps) >> 2
            self.inpps += ((d_inpkts << 9) - self.inpps) >> 2
            self.outpps += ((d_outpkts << 9) - self.outpps) >> 2
            self.inbps += ((d_inbytes << 4) - self.inbps) >> 2
            self.outbps += ((d_outbytes << 4) - self.outbps) >> 2
            self.last_conns, self.last_inpkts, self.last_outpkts = c.conns, c.inpkts, c.outpkts
            self.last_inbytes, self.last_outbytes = c.inbytes, c.outbytes
            return
        self.cps = _step(self.cps, d_conns & _U64, 9)
        self.inpps = _step(self.inpps, d_inpkts & _U64, 9)
        self.outpps = _step(self.outpps, d_outpkts & _U64, 9)
        self.inbps = _step(self.inbps, d_inbytes & _U64, 4)
        self.outbps = _step(self.outbps, d_outbytes & _U64, 4)
        self.last_conns = c.conns & _U64
        self.last_inpkts = c.inpkts & _U64
        self.last_outpkts = c.outpkts & _U64
        self.last_inbytes = c.inbytes & _U64
        self.last_outbytes = c.outbytes & _U64

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


def _went_down(cur: Counters, prev: Counters) -> bool:
    return (
        cur.conns < prev.conns
        or cur.inpkts < prev.inpkts
        or cur.outpkts < prev.outpkts
        or cur.inbytes < prev.inbytes
        or cur.outbytes < prev.outbytes
    )


_ZERO = Counters()


@dataclass(slots=True)
class _Entry:
    est: KernelEstimator
    base: Counters  # counters at the last EWMA step (or at the start)
    prev: Counters  # counters at the last sample
    prev_time: float
    step_time: float  # when the last EWMA step was due
    warm: bool  # first step still to come, and it warm-starts the average
    ewma: Rates | None  # the last read-out
    gen: int  # the sweep generation that last saw this key


class Estimator:
    """Per-key EWMA and instant rates from timed counter samples. Pure: time is an argument.

    Keys are whatever identifies an entry (the poller uses ServiceKey, (ServiceKey, family,
    address, port) for dests, and "totals"). sweep() forgets the keys not seen since the last sweep.
    """

    def __init__(self, tick: float = TICK) -> None:
        self.tick = tick
        self._entries: dict[Hashable, _Entry] = {}
        self._gen = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def update(
        self, key: Hashable, counters: Counters, mono_time: float
    ) -> tuple[Rates | None, Rates | None]:
        """Feed one sample; returns (ewma, instant), both None on a first sample or a reset."""
        e = self._entries.get(key)
        if e is None:
            fresh = counters == _ZERO
            est = KernelEstimator() if fresh else KernelEstimator.zeroed(counters)
            self._entries[key] = _Entry(
                est, counters, counters, mono_time, mono_time, not fresh, None, self._gen
            )
            return None, None
        e.gen = self._gen
        dt = mono_time - e.prev_time
        if dt <= 0:  # the same sample again, or a clock that went back: nothing measurable
            return e.ewma, None
        p = e.prev
        conns, inpkts, outpkts = counters.conns, counters.inpkts, counters.outpkts
        inbytes, outbytes = counters.inbytes, counters.outbytes
        e.prev, e.prev_time = counters, mono_time
        if (
            conns < p.conns
            or inpkts < p.inpkts
            or outpkts < p.outpkts
            or inbytes < p.inbytes
            or outbytes < p.outbytes
        ):
            # Reset or wrap: restart where the kernel does, at avg 0 and counters 0.
            e.est, e.base, e.warm, e.ewma = KernelEstimator(), _ZERO, False, None
            self._advance(e, counters, mono_time)
            return None, None
        # No delta is negative here, so equal sums mean nothing moved: most entries of a big
        # director, which then share one object instead of allocating.
        if (
            conns + inpkts + outpkts + inbytes + outbytes
            == p.conns + p.inpkts + p.outpkts + p.inbytes + p.outbytes
        ):
            instant = _IDLE
        else:
            instant = Rates(
                (conns - p.conns) / dt,
                (inpkts - p.inpkts) / dt,
                (outpkts - p.outpkts) / dt,
                (inbytes - p.inbytes) / dt,
                (outbytes - p.outbytes) / dt,
            )
        tick = self.tick
        if not e.warm and tick * 0.75 <= mono_time - e.step_time < tick * 1.75:
            # One kernel step due: the usual case, inlined (see _advance for the rest).
            e.step_time += tick
            if abs(mono_time - e.step_time) > tick / 2:
                e.step_time = mono_time
            est = e.est
            est.tick(counters)
            e.base = counters
            e.ewma = est.read()
        else:
            self._advance(e, counters, mono_time)
        return e.ewma, instant

    def _advance(self, e: _Entry, counters: Counters, now: float) -> None:
        """Run the kernel steps due since the last one, splitting the counter delta evenly."""
        tick = self.tick
        steps = int((now - e.step_time) / tick + 0.25)  # 1.5..3.5 ticks -> 1 step, and so on
        if steps <= 0:
            return
        e.step_time += steps * tick
        if abs(now - e.step_time) > tick / 2:  # the poll cadence drifted from ours: resync
            e.step_time = now
        if e.warm:
            e.est = KernelEstimator.steady(counters, _per_step(e.base, counters, steps))
            e.warm = False
        elif steps > 1:
            skipped = max(0, steps - MAX_CATCHUP_STEPS)
            if skipped:
                e.est.rebase(_between(e.base, counters, skipped, steps))
            for i in range(skipped + 1, steps):
                e.est.tick(_between(e.base, counters, i, steps))
            e.est.tick(counters)
        else:
            e.est.tick(counters)
        e.base = counters
        e.ewma = e.est.read()

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
