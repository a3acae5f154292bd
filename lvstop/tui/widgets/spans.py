"""Text made of (text, tone) spans: the header, the banner, the service summary and the drain notes.

Tones map to component classes, so colours come from the stylesheet and NO_COLOR keeps the words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from lvstop.tui.viewmodel import Chunk, Span, fit_chunks

TONES = ("good", "warn", "bad", "drained", "dim", "accent")


class SpanLines(Widget):
    """Lines of spans; each line is cut at the widget's width (no wrapping: a header must not jump)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {f"spans--{t}" for t in TONES}

    DEFAULT_CSS = """
    SpanLines { height: auto; text-wrap: nowrap; text-overflow: ellipsis; }
    SpanLines > .spans--good { color: $success; }
    SpanLines > .spans--warn { color: $warning; text-style: bold; }
    SpanLines > .spans--bad { color: $error; text-style: bold; }
    SpanLines > .spans--drained { color: $secondary; }
    SpanLines > .spans--dim { color: $text-muted; }
    SpanLines > .spans--accent { color: $accent; text-style: bold; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._lines: tuple[tuple[Span, ...], ...] = ()

    @property
    def plain(self) -> str:
        return "\n".join("".join(t for t, _ in line) for line in self._lines)

    def set_lines(self, lines: Sequence[Sequence[Span]]) -> None:
        new = tuple(tuple(line) for line in lines)
        if new != self._lines:
            # A new layout only when the height changes: a relayout costs milliseconds every tick.
            relayout = len(new) != len(self._lines)
            self._lines = new
            self.refresh(layout=relayout)

    def tone(self, tone: str) -> Style:
        return self.get_component_rich_style(f"spans--{tone}", partial=True) if tone else Style.null()

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        for n, line in enumerate(self._lines):
            if n:
                text.append("\n")
            for chunk_text, tone in line:
                text.append(chunk_text, self.tone(tone))
        return text


class ChunkLines(SpanLines):
    """Header lines made of chunks: at narrow widths the least useful chunks go first, whole."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._chunks: tuple[tuple[Chunk, ...], ...] = ()

    def set_chunks(self, lines: Sequence[Sequence[Chunk]]) -> None:
        new = tuple(tuple(line) for line in lines)
        if new != self._chunks:
            self._chunks = new
            self._fit()

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        width = max(1, self.size.width)
        self.set_lines([tuple(s for c in fit_chunks(line, width) for s in c.spans) for line in self._chunks])
