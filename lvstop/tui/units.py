"""How numbers look on screen: human units (1.2k, 34 MB) or exact digits, durations, sparklines.

Pure functions: the view model formats cells with them off the UI thread; tables sort by the raw
numbers, never by these strings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_BARS = "▁▂▃▄▅▆▇█"


def _scaled(value: float) -> tuple[float, str]:
    for factor, suffix in _SI:
        if abs(value) >= factor * 0.9995:
            return value / factor, suffix
    return value, ""


def _short(value: float, scaled: bool) -> str:
    """Three significant digits at most: 7, 7.5, 75, 750; a scaled value keeps its decimal (1.0k)."""
    if abs(value) >= 9.95 or (not scaled and value == int(value)):
        return f"{value:.0f}"
    return f"{value:.1f}"


def count(value: float | None, *, human: bool = True) -> str:
    """Connections, packets and their rates: `1.2k` when human, `1,234` when exact."""
    if value is None:
        return "-"
    if not human:
        return exact(value)
    scaled, suffix = _scaled(value)
    return _short(scaled, bool(suffix)) + suffix


def nbytes(value: float | None, *, human: bool = True) -> str:
    """Bytes (and bytes per second): `34 MB` (SI, as network gear counts) or exact digits."""
    if value is None:
        return "-"
    if not human:
        return exact(value)
    scaled, suffix = _scaled(value)
    return f"{_short(scaled, bool(suffix))} {suffix}B"


def exact(value: float) -> str:
    """Every digit, grouped by thousands; fractional rates keep one decimal."""
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.1f}"


def percent(part: float, whole: float) -> str:
    if whole <= 0:
        return "-"
    return f"{100.0 * part / whole:.0f}%"


def duration(seconds: float | None) -> str:
    """`850ms`, `2.1s`, `3m05s`, `2h03m`, `4d02h`: short enough for a header."""
    if seconds is None or math.isnan(seconds):
        return "-"
    if seconds < 0:
        seconds = 0.0
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.0f}s" if seconds == int(seconds) else f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def latency(seconds: float | None) -> str:
    """A probe's answer time: `0.4ms` (loopback and LAN answers are well under a millisecond), `12ms`,
    then as `duration`."""
    if seconds is None or math.isnan(seconds):
        return "-"
    if seconds < 0.0095:
        return f"{max(seconds, 0.0) * 1000:.1f}ms"
    return duration(seconds)


FLAT = 0.05  # swings smaller than this share of the peak draw a flat line: noise is not a trend


def sparkline(values: Sequence[float], width: int, top: float | None = None) -> str:
    """The last `width` values as bars from zero to `top` (their own maximum if None); blanks pad on
    the left.

    From zero, so a 9 -> 10 wobble stays a wobble and a fall to nothing reaches the floor; rows given
    one `top` are drawn to one scale. Zero is the floor; anything above it shows at least one step.
    """
    if width <= 0:
        return ""
    tail = list(values)[-width:]
    hi = max(tail, default=0.0) if top is None else top
    last = len(_BARS) - 1
    if hi <= 0:
        return (_BARS[0] * len(tail)).rjust(width)
    bars = "".join(_BARS[0] if v <= 0 else _BARS[min(last, max(1, round(v / hi * last)))] for v in tail)
    return bars.rjust(width)


def trend_top(series: Iterable[Sequence[float]]) -> float:
    """The largest value of all the series (each holds one trend window): one scale for a table."""
    return max((max(s) for s in series if len(s)), default=0.0)
