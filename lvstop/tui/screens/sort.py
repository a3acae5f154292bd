"""F6 (or o): pick the sort column from a list, as htop's "Sort by" does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from lvstop.tui.viewmodel import Column, SortSpec


class SortScreen(ModalScreen[str | None]):
    """Returns the chosen column's id; Escape returns None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "cancel", "Cancel", id="sort-cancel")]

    def __init__(self, columns: Sequence[Column], current: SortSpec | None) -> None:
        super().__init__()
        self.columns = [c for c in columns if c.sortable]
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="sort-box", classes="dialog"):
            yield Static(
                "Sort by (Enter picks; the same column again reverses)", id="sort-title", markup=False
            )
            options = []
            for c in self.columns:
                mark = ""
                if self.current is not None and self.current.column == c.id:
                    mark = "  ▼" if self.current.reverse else "  ▲"
                options.append(Option(c.title + mark, id=c.id))
            yield OptionList(*options, id="sort-options", markup=False)

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        ids = [c.id for c in self.columns]
        if self.current is not None and self.current.column in ids:
            options.highlighted = ids.index(self.current.column)
        options.focus()

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
