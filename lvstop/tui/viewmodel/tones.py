"""Tones name what a piece of text means: the stylesheet maps them to colours, NO_COLOR leaves the text."""

from __future__ import annotations

GOOD, WARN, BAD, DRAINED, DIM, ACCENT = "good", "warn", "bad", "drained", "dim", "accent"

Span = tuple[str, str]  # (text, tone)
