"""`w`: ask for the new weight; the confirmation dialog follows with its effect."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.validation import Integer
from textual.widgets import Input, Static

MAX_WEIGHT = 65535


class WeightScreen(ModalScreen[int | None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="weight-cancel")]

    def __init__(self, dest: str, current: int) -> None:
        super().__init__()
        self.dest = dest
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="weight-box", classes="dialog"):
            yield Static(f"New weight for {self.dest} (now {self.current}), 0..{MAX_WEIGHT}:", markup=False)
            yield Input(
                str(self.current),
                type="integer",
                validators=[Integer(minimum=0, maximum=MAX_WEIGHT)],
                id="weight-input",
            )
            yield Static("", id="weight-error")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        result = event.validation_result
        if result is not None and not result.is_valid:
            self.query_one("#weight-error", Static).update("; ".join(result.failure_descriptions))
            return
        self.dismiss(int(event.value))

    def action_cancel(self) -> None:
        self.dismiss(None)
