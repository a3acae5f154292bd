"""The estimator against the kernel's arithmetic (net/netfilter/ipvs/ip_vs_est.c)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvstop.estimator import MAX_CATCHUP_STEPS, Estimator, KernelEstimator, counters_row
from lvstop.model import Counters, Rates

U64 = (1 << 64) - 1


def keys(*names: str) -> np.ndarray:
    return np.array([n.encode() for n in names], "V8")


def upd(
    est: Estimator, counters: Counters, t: float, kernel_rates: bool = False
) -> tuple[Rates | None, Rates | None]:
    """One sample of a table of one entry; (ewma, instant) as rows, None where there is no rate."""
    e = est.update(keys("k"), np.array([counters_row(counters)], np.uint64), t, kernel_rates)
    ewma = Rates(*e.ewma[0].tolist()) if e.has_ewma[0] else None
    instant = Rates(*e.instant[0].tolist()) if e.has_instant[0] else None
    return ewma, instant


def c(conns: int = 0, inpkts: int = 0, outpkts: int = 0, inbytes: int = 0, outbytes: int = 0) -> Counters:
    return Counters(conns, inpkts, outpkts, inbytes, outbytes)


# ------------------------------------------------------------------------------ the kernel struct


def test_hand_computed_sequence() -> None:
    # Every tick: rate = delta << 9 (conns) or << 4 (bytes); avg += (rate - avg) >> 2;
    # read-out (avg + 511) >> 10, bytes (avg + 15) >> 5. Worked by hand:
    #   delta 10: rate  5120, avg 0    + 5120/4        = 1280, read (1280+511)>>10  = 1
    #   delta 20: rate 10240, avg 1280 + 8960/4        = 3520, read (3520+511)>>10  = 3
    #   delta  0: rate     0, avg 3520 - 3520/4        = 2640, read (2640+511)>>10  = 3
    #   delta 70: rate 35840, avg 2640 + 33200/4       = 10940, read (10940+511)>>10 = 11
    # Bytes, delta 1000 then 0: rate 16000, avg 4000 (read (4000+15)>>5 = 125), then 3000, 2250,
    # and 2250 + (-2250 >> 2) = 2250 - 563 = 1687: the shift floors -562.5.
    k = KernelEstimator()
    seen = []
    for conns, inbytes in ((10, 1000), (30, 1000), (30, 1000), (100, 1000)):
        k.tick(c(conns, inbytes=inbytes))
        seen.append((k.cps, k.read().cps, k.inbps, k.read().inbps))
    assert seen == [(1280, 1, 4000, 125), (3520, 3, 3000, 94), (2640, 3, 2250, 70), (10940, 11, 1687, 53)]


def test_negative_differences_shift_like_c_signed_arithmetic() -> None:
    # (s64)(rate - avg) >> 2 is an arithmetic shift: it floors (-54 >> 2 == -14, not -13), so an
    # idle entry decays to exactly 0. Division truncating toward zero would stop at avg 3.
    k = KernelEstimator()
    k.tick(c(1))
    assert k.cps == 128
    trail = []
    for _ in range(16):
        k.tick(c(1))
        trail.append(k.cps)
    assert trail == [96, 72, 54, 40, 30, 22, 16, 12, 9, 6, 4, 3, 2, 1, 0, 0]


def test_steady_one_connection_per_two_seconds_reads_zero_cps() -> None:
    # The issue says a steady 1 conn per 2 s reads 0 cps; computed, not assumed: rate = 1 << 9 = 512.
    # From below the average climbs while (512 - avg) >> 2 >= 1, i.e. until 512 - avg == 3: it
    # settles at exactly 509, and (509 + 511) >> 10 = 1020 >> 10 = 0. (From above it settles at 512,
    # and (512 + 511) >> 10 = 0 as well.) So 0.5 cps reads 0: the kernel rounds halves down here.
    k = KernelEstimator()
    for n in range(1, 60):
        k.tick(c(n))
    assert k.cps == 509
    assert k.read().cps == 0
    k.tick(c(60))
    assert k.cps == 509  # a fixed point
    high = KernelEstimator(last_conns=0, cps=5000)
    for n in range(1, 60):
        high.tick(c(n))
    assert high.cps == 512
    assert high.read().cps == 0


def test_steady_two_connections_per_two_seconds_reads_one_cps() -> None:
    k = KernelEstimator()
    for n in range(1, 80):
        k.tick(c(2 * n))
    assert k.cps == 1024 - 3
    assert k.read().cps == 1  # (1021 + 511) >> 10


def _ref_tick(avg: int, last: int, cur: int, shift: int) -> tuple[int, int]:
    """The C statement, with ctypes doing the u64/s64 conversions."""
    rate = _u64(_u64(cur - last) << shift)
    return _u64(avg + (_s64(_s64(rate) - _s64(avg)) >> 2)), _u64(cur)


def _u64(x: int) -> int:
    return ctypes.c_uint64(x).value


def _s64(x: int) -> int:
    return ctypes.c_int64(x).value


u64s = st.one_of(
    st.integers(0, U64),
    st.integers(0, 1 << 20),
    st.integers((1 << 63) - (1 << 20), (1 << 63) + (1 << 20)),
    st.integers(U64 - (1 << 20), U64),
)


@given(avg=u64s, last=u64s, cur=u64s, byte_avg=u64s)
def test_tick_matches_c_semantics_over_the_whole_u64_range(
    avg: int, last: int, cur: int, byte_avg: int
) -> None:
    k = KernelEstimator(last, last, last, last, last, avg, avg, avg, byte_avg, byte_avg)
    k.tick(c(cur, cur, cur, cur, cur))
    want_cps, want_last = _ref_tick(avg, last, cur, 9)
    want_bps, _ = _ref_tick(byte_avg, last, cur, 4)
    assert (k.cps, k.inpps, k.outpps, k.last_conns) == (want_cps, want_cps, want_cps, want_last)
    assert (k.inbps, k.outbps) == (want_bps, want_bps)
    r = k.read()
    assert r.cps == _u64(want_cps + 0x1FF) >> 10
    assert r.inbps == _u64(want_bps + 0xF) >> 5


def test_counter_wrap_is_a_small_delta_for_the_kernel() -> None:
    k = KernelEstimator.zeroed(c(U64 - 9))
    k.tick(c(5))  # 15 connections across the wrap
    assert k.cps == (15 << 9) >> 2


def test_zeroed_takes_counters_as_baseline() -> None:
    k = KernelEstimator.zeroed(c(100, 200, 300, 400, 500))
    k.tick(c(100, 200, 300, 400, 500))
    assert k.read() == Rates(0, 0, 0, 0, 0)


# ------------------------------------------------------------------------------ Estimator


def test_first_sample_gives_no_rate() -> None:
    assert upd(Estimator(), c(5), 10.0) == (None, None)


@settings(deadline=None)  # a sample costs numpy's per-call overhead: ~0.1 ms, more on a loaded machine
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**9)), min_size=1, max_size=40))
def test_fresh_entry_at_two_second_ticks_is_bit_exact(deltas: list[tuple[int, int]]) -> None:
    est = Estimator()
    kernel = KernelEstimator()
    assert upd(est, c(), 100.0) == (None, None)
    conns = inbytes = 0
    for i, (dc, db) in enumerate(deltas, start=1):
        conns, inbytes = conns + dc, inbytes + db
        sample = c(conns, conns, conns, inbytes, inbytes)
        kernel.tick(sample)
        ewma, instant = upd(est, sample, 100.0 + 2.0 * i)
        assert ewma == kernel.read()
        assert instant == Rates(dc / 2, dc / 2, dc / 2, db / 2, db / 2)


@settings(deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 1 << 58), st.sampled_from([0, 1, (1 << 54) - 1, 1 << 54, 1 << 57])),
        min_size=1,
        max_size=40,
    )
)
def test_huge_deltas_take_the_exact_u64_path_and_stay_bit_exact(deltas: list[tuple[int, int]]) -> None:
    # Deltas from 2^54 up, and averages from 2^63 up, leave the fast path: u64/s64 arithmetic.
    est = Estimator()
    kernel = KernelEstimator()
    upd(est, c(), 0.0)
    conns = inbytes = 0
    for i, (dc, db) in enumerate(deltas, start=1):
        conns, inbytes = conns + dc, inbytes + db
        sample = c(conns, conns, 0, inbytes, inbytes)
        want = kernel.tick(sample)
        assert want == kernel.read()
        assert upd(est, sample, 2.0 * i)[0] == want


def test_instant_is_the_plain_delta_over_the_measured_interval() -> None:
    est = Estimator()
    upd(est, c(10, 20, 30, 1000, 2000), 0.0)
    _, instant = upd(est, c(15, 30, 30, 2000, 2500), 2.5)
    assert instant == Rates(2.0, 4.0, 0.0, 400.0, 200.0)


def test_an_entry_with_history_warm_starts_at_its_first_measured_rate() -> None:
    est = Estimator()
    upd(est, c(1000, inbytes=50_000), 0.0)
    ewma, instant = upd(est, c(1020, inbytes=52_000), 2.0)
    assert instant is not None and instant.cps == 10.0
    # As if 20 conns per tick had been seen for ever: avg = 20 << 9, read (10240 + 511) >> 10 = 10.
    assert ewma is not None and (ewma.cps, ewma.inbps) == (10, 1000)
    ewma, _ = upd(est, c(1020, inbytes=52_000), 4.0)  # then the kernel arithmetic runs
    assert ewma is not None and ewma.cps == (10240 - 2560 + 511) >> 10


def test_with_the_kernels_rates_only_the_instant_rate_is_computed() -> None:
    est = Estimator()
    assert upd(est, c(1000, inbytes=50_000), 0.0, kernel_rates=True) == (None, None)
    assert upd(est, c(1020, inbytes=52_000), 2.0, kernel_rates=True) == (
        None,
        Rates(10.0, 0.0, 0.0, 1000.0, 0.0),
    )
    # Should the kernel's rates stop coming, the EWMA warm-starts at the next measured tick:
    # 40 conns per tick read (40 << 9 + 511) >> 10 = 20 cps, 4000 bytes (4000 << 4 + 15) >> 5 = 2000 B/s.
    assert upd(est, c(1060, inbytes=56_000), 4.0) == (
        Rates(20, 0, 0, 2000, 0),
        Rates(20.0, 0.0, 0.0, 2000.0, 0.0),
    )


@pytest.mark.parametrize("after", [c(3), c(50, 0, 0, 0, 0), c(1 << 40, 0, 9, 0, 0)])
def test_counter_going_down_gives_no_rate(after: Counters) -> None:
    est = Estimator()
    upd(est, c(100, 100, 100, 100, 100), 0.0)
    upd(est, c(120, 130, 140, 150, 160), 2.0)
    assert upd(est, after, 4.0) == (None, None)


def test_after_a_reset_the_ewma_restarts_exactly_like_the_kernel() -> None:
    est = Estimator()
    upd(est, c(5000), 0.0)
    upd(est, c(5100), 2.0)
    # ipvsadm -Z, then one kernel tick counted 20 conns before our next poll
    assert upd(est, c(20), 4.0) == (None, None)
    ewma, instant = upd(est, c(40), 6.0)
    kernel = KernelEstimator()  # the kernel's own starting point: avg 0, counters 0
    kernel.tick(c(20))
    kernel.tick(c(40))
    assert ewma == kernel.read()
    assert ewma is not None and ewma.cps == 4  # avg 2560 + (10240 - 2560) / 4 = 4480
    assert instant is not None and instant.cps == 10.0


def test_u64_wrap_gives_no_rate_and_never_a_negative_or_a_spike() -> None:
    est = Estimator()
    upd(est, c(U64 - 100, inbytes=U64 - 5), 0.0)
    upd(est, c(U64 - 50, inbytes=U64 - 3), 2.0)
    assert upd(est, c(7, inbytes=10), 4.0) == (None, None)
    ewma, instant = upd(est, c(27, inbytes=30), 6.0)
    assert ewma is not None and instant is not None
    assert 0 <= ewma.cps <= 10 and instant.cps == 10.0


def test_same_timestamp_twice_measures_nothing() -> None:
    est = Estimator()
    upd(est, c(0), 0.0)
    ewma, _ = upd(est, c(10), 2.0)
    assert upd(est, c(30), 2.0) == (ewma, None)


def test_time_going_back_starts_a_new_baseline_and_rates_resume() -> None:
    # A replay rewound to its start: the old clock must not freeze the rates until it is passed again.
    est = Estimator()
    upd(est, c(0), 100.0)
    upd(est, c(10), 102.0)
    assert upd(est, c(0), 0.0) == (None, None)
    _, instant = upd(est, c(20), 2.0)
    assert instant is not None and instant.cps == 10


def _kernel_like(rate_per_tick: int, t: float) -> Counters:
    """Counters of an entry getting `rate_per_tick` conns per tick, refreshed every 2 s only."""
    return c(rate_per_tick * int(t // 2))


def test_one_second_polls_step_the_ewma_every_other_poll() -> None:
    every1, every2 = Estimator(), Estimator()
    results1 = {}
    for i in range(0, 41):
        t = 0.5 + i * 1.0
        results1[t] = upd(every1, _kernel_like(30, t), t)[0]
    for i in range(0, 21):
        t = 0.5 + i * 2.0
        ewma = upd(every2, _kernel_like(30, t), t)[0]
        assert results1[t] == ewma
    assert ewma is not None and ewma.cps == 15  # steady 30 per 2 s


def test_four_second_polls_run_two_kernel_steps_with_the_delta_split() -> None:
    est = Estimator()
    kernel = KernelEstimator()
    upd(est, c(0), 0.0)
    total = 0
    for i in range(1, 8):
        delta = 40 * i
        kernel.tick(c(total + delta // 2))
        total += delta
        kernel.tick(c(total))
        ewma, _ = upd(est, c(total), 4.0 * i)
        assert ewma == kernel.read()


def test_a_drifting_cadence_never_doubles_a_step() -> None:
    # The poller arms each poll after the previous one; a 2.02 s period must still be one step per poll.
    est = Estimator()
    t, total = 0.0, 0
    upd(est, c(0), t)
    for _ in range(400):
        t += 2.02
        total += 100
        ewma, _ = upd(est, c(total), t)
    assert ewma is not None and ewma.cps == 50  # a doubled step would halve a tick's delta


def test_a_long_gap_catches_up_a_bounded_number_of_steps() -> None:
    est = Estimator()
    upd(est, c(0), 0.0)
    ewma, _ = upd(est, c(100), 2.0)
    kernel = KernelEstimator.zeroed(c(0))
    assert ewma == kernel.tick(c(100))
    ewma, instant = upd(est, c(100 + 50 * 1800), 3602.0)  # an hour later, 50 per tick
    kernel.rebase(c(100 + 50 * (1800 - MAX_CATCHUP_STEPS)))  # the older steps only move the baseline
    for j in range(1800 - MAX_CATCHUP_STEPS + 1, 1801):
        kernel.tick(c(100 + 50 * j))
    assert instant is not None and instant.cps == 25.0
    assert ewma == kernel.read() and ewma is not None and ewma.cps == 25


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 1 << 62), min_size=5, max_size=5), min_size=1, max_size=40),
    st.integers(2, 100),
)
def test_several_steps_on_columns_equal_the_kernel_entry_by_entry(
    deltas: list[list[int]], steps: int
) -> None:
    """Rows catching up `steps` kernel steps at once, each as a KernelEstimator stepping through the
    evenly split delta would have it (deltas up to 2^62: no u64 overflow in the split)."""
    n = len(deltas)
    est = Estimator()
    ks = np.array([f"r{i}".encode() for i in range(n)], "V4")
    zero = np.zeros((n, 5), np.uint64)
    est.update(ks, zero, 0.0)
    second = zero + np.uint64(7)  # one plain step first, from zero: the kernel's own start
    est.update(ks, second, 2.0)
    end = second + np.array(deltas, np.uint64)
    e = est.update(ks, end, 2.0 + 2.0 * steps)
    for i in range(n):
        k = KernelEstimator.zeroed(c())
        k.tick(c(*second[i].tolist()))
        a, b = second[i].tolist(), end[i].tolist()
        skipped = max(0, steps - MAX_CATCHUP_STEPS)
        k.rebase(Counters(*(x + (y - x) * skipped // steps for x, y in zip(a, b, strict=True))))
        for j in range(skipped + 1, steps + 1):
            k.tick(Counters(*(x + (y - x) * j // steps for x, y in zip(a, b, strict=True))))
        assert e.has_ewma[i] and Rates(*e.ewma[i].tolist()) == k.read(), i


def test_an_update_forgets_entries_it_does_not_name_unless_kept() -> None:
    est = Estimator()
    three = np.array([counters_row(c(1))] * 3, np.uint64)
    est.update(keys("a", "b", "c"), three, 0.0)
    keep = np.array([False, True, False])  # b's read was incomplete: its state stays
    est.update(keys("a"), np.array([counters_row(c(2))], np.uint64), 2.0, keep=keep)
    assert est.keys.tolist() == keys("a", "b").tolist()
    e = est.update(
        keys("a", "b", "c"),
        np.array([counters_row(c(4)), counters_row(c(3)), counters_row(c(1))], np.uint64),
        4.0,
    )
    assert e.has_instant.tolist() == [True, True, False]  # c was forgotten: a first sample again
    assert e.instant[:, 0].tolist() == [1.0, 0.5, 0.0]  # b over the 4 s since its last sample


def test_rows_move_and_churn_without_mixing_entries() -> None:
    est = Estimator()
    est.update(keys("a", "b"), np.array([counters_row(c(10)), counters_row(c(100))], np.uint64), 0.0)
    e = est.update(
        keys("x", "b", "a"),
        np.array([counters_row(c(5)), counters_row(c(120)), counters_row(c(14))], np.uint64),
        2.0,
    )
    assert e.has_instant.tolist() == [False, True, True]
    assert e.instant[:, 0].tolist() == [0.0, 10.0, 2.0]


def test_an_idle_entry_reads_zero() -> None:
    est = Estimator()
    upd(est, c(5, 6, 7, 8, 9), 0.0)
    assert upd(est, c(5, 6, 7, 8, 9), 2.0) == (Rates(0, 0, 0, 0, 0), Rates(0.0, 0.0, 0.0, 0.0, 0.0))
    ewma, instant = upd(est, c(6, 6, 7, 8, 9), 4.0)
    assert instant == Rates(0.5, 0.0, 0.0, 0.0, 0.0) and ewma == Rates(0, 0, 0, 0, 0)  # 128 + 511 < 1024


def test_the_same_counters_object_again_decays_like_the_kernel_and_settles_at_zero() -> None:
    # Sources hand out the previous Counters object when nothing moved; the EWMA still decays.
    est = Estimator()
    kernel = KernelEstimator()
    upd(est, c(), 0.0)
    busy = c(40, 400, 300, 40_000, 900_000)
    kernel.tick(busy)
    assert upd(est, busy, 2.0)[0] == kernel.read()
    seen = []
    for i in range(2, 60):
        ewma, instant = upd(est, busy, 2.0 * i)
        kernel.tick(busy)
        assert ewma == kernel.read() and instant == Rates(0.0, 0.0, 0.0, 0.0, 0.0)
        seen.append(ewma)
    assert seen[0] is not None and seen[0].outbps > 0
    assert seen[-1] == Rates(0, 0, 0, 0, 0)  # settled
