"""A table as the screens get it: columns, formatted rows sorted by raw values, widths; which columns fit.

Also the line that says a kept filter hides rows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from lvstop.tui.viewmodel.settings import SortSpec
from lvstop.tui.viewmodel.tones import ACCENT, DIM, WARN, Span


@dataclass(frozen=True, slots=True)
class Column:
    id: str
    title: str
    numeric: bool = True  # right-aligned; sorting starts descending
    priority: int = 0  # columns with the highest priority number go first when the table is narrow
    sortable: bool = True
    shrink: bool = False  # text that may be cut short (…) rather than dropped when the table is narrow


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    cells: tuple[str, ...]
    tone: str = ""
    cell_tones: tuple[str, ...] = ()  # per cell; "" falls back to the row's tone


@dataclass(frozen=True, slots=True)
class TableModel:
    columns: tuple[Column, ...]
    rows: tuple[Row, ...] = ()
    widths: tuple[int, ...] = ()
    index: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    sort: SortSpec | None = None
    total: int = 0  # rows before the filter
    empty: str = "nothing to show"

    def column(self, column_id: str) -> Column | None:
        for c in self.columns:
            if c.id == column_id:
                return c
        return None


@dataclass(slots=True)
class RowCache:
    """A table's rows of the last build by key, each with the inputs it was made from, valid while
    `context` (units, scales) is the same: a build formats only the rows whose inputs changed."""

    context: object = None
    rows: dict[Any, tuple[Any, ...]] = field(default_factory=dict)


def matches(needle: str, haystack: Iterable[str]) -> bool:
    return any(needle in h.lower() for h in haystack)


def finish_table(
    columns: tuple[Column, ...],
    entries: list[tuple[Sequence[object], Row]],
    sort: SortSpec | None,
    total: int,
    empty: str,
) -> TableModel:
    """Sort rows by the raw value of the sort column (key breaks ties), measure widths, index keys.

    With `sort` None the rows keep the order they came in (the connection table's own order).
    """
    ids = [c.id for c in columns]
    if sort is not None:
        col = ids.index(sort.column) if sort.column in ids else 0
        sort = SortSpec(ids[col], sort.reverse)
        entries.sort(key=lambda e: e[1].key)
        entries.sort(key=lambda e: e[0][col], reverse=sort.reverse)  # type: ignore[arg-type,return-value]
    rows = tuple(row for _, row in entries)
    widths = [len(c.title) for c in columns]
    for row in rows:
        for i, cell in enumerate(row.cells):
            if len(cell) > widths[i]:
                widths[i] = len(cell)
    index = MappingProxyType({row.key: i for i, row in enumerate(rows)})
    return TableModel(columns, rows, tuple(widths), index, sort, total, empty)


def filter_line(text: str, counts: tuple[int, int] | None, noun: str) -> tuple[Span, ...]:
    """The line that says a kept filter hides rows: what it is, how many rows pass, how to undo it."""
    spans: list[Span] = [(" filter ", DIM), (text, ACCENT)]
    if counts is not None:
        spans.append((f"  {counts[0]} of {counts[1]} {noun}", WARN if counts[0] < counts[1] else ""))
    spans.append(("  / edits, esc clears", DIM))
    return tuple(spans)


MIN_SHRUNK = 12  # a shrinkable column cut to fewer characters than this is not worth showing


def visible_columns(model: TableModel, width: int, gap: int = 2) -> list[tuple[int, int]]:
    """(index, width) of the columns that fit in `width`, dropping the least important first.

    The column the table is sorted by comes right after the first (key) column: the user chose it.
    A shrinkable column that does not fit whole takes what room is left, if that is enough.
    """
    cols = model.columns
    widths = model.widths or tuple(len(c.title) for c in cols)
    sort = model.sort.column if model.sort is not None else None
    first = min(range(len(cols)), key=lambda i: (cols[i].priority, i), default=0)

    def rank(i: int) -> tuple[int, int, int]:
        if i == first:
            return (0, 0, 0)
        return (1, 0, 0) if cols[i].id == sort else (2, cols[i].priority, i)

    order = sorted(range(len(cols)), key=rank)
    chosen: dict[int, int] = {}
    used = 0
    for i in order:
        sep = gap if chosen else 0
        if not chosen or used + sep + widths[i] <= width:
            chosen[i] = widths[i]
        elif cols[i].shrink and width - used - sep >= MIN_SHRUNK:
            chosen[i] = width - used - sep  # what is left; lower-priority columns get nothing after this
        else:
            continue
        used += sep + chosen[i]
    return sorted(chosen.items())
