"""The confirmation of a weight edit: what it does to the service, Control's warnings, and the guard."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from lvstop.tui.writes import Preview


@dataclass(frozen=True, slots=True)
class Answer:
    force: bool = False
    reason: str | None = None


def describe(p: Preview) -> Text:
    op, res, eff = p.op, p.result, p.effect
    text = Text()
    text.append(f"{op.verb} {op.dest}\n", style="bold")
    text.append(f"in {op.service}\n\n")
    if res is not None:
        text.append(f"weight {res.old} → {res.requested}\n")
    if eff is not None:
        text.append(
            f"service live weight {eff.live_before} → {eff.live_after} "
            f"on {eff.live_dests_after} of {eff.dests} dests (last poll)\n",  # Control re-reads them
            style="bold red" if eff.takes_last_weight else "",
        )
    if res is not None and res.requested == 0 and res.active_conns:
        text.append(f"{res.active_conns} active connections stay until they close\n")
    for w in res.warnings if res is not None else ():
        text.append(f"! {w}\n", style="yellow")
    if p.refused:
        text.append(f"\n{p.refused}\n", style="bold red")
    if p.error:
        text.append(f"\ncannot do this: {p.error}\n", style="bold red")
    return text


class ConfirmScreen(ModalScreen[Answer | None]):
    """y confirms, n or Escape cancels. A guard refusal needs a reason before Force is enabled."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,n", "cancel", "Cancel", id="confirm-cancel"),
        Binding("y", "confirm", "Confirm", id="confirm-yes"),
    ]

    def __init__(self, preview: Preview) -> None:
        super().__init__()
        self.preview = preview

    def compose(self) -> ComposeResult:
        p = self.preview
        # The text scrolls; the reason and the buttons are docked under it, so they stay on screen
        # however small the terminal (40x12) and however many warnings Control gives.
        with VerticalScroll(id="confirm-box", classes="dialog"):
            yield Static(describe(p), id="confirm-text")
            with Vertical(id="confirm-actions"):
                if p.refused:
                    yield Input(placeholder="reason (required to force)", id="confirm-reason")
                with Horizontal(classes="buttons"):
                    if p.error is None:
                        label = f"Force {p.op.button.lower()}" if p.refused else p.op.button
                        yield Button(
                            label,
                            variant="error" if p.refused else "primary",
                            id="confirm-yes",
                            disabled=bool(p.refused),
                        )
                    yield Button("Cancel", id="confirm-no")

    def on_mount(self) -> None:
        target = "#confirm-reason" if self.preview.refused else "#confirm-no"
        self.query_one(target).focus()

    @on(Input.Changed, "#confirm-reason")
    def _reason_changed(self, event: Input.Changed) -> None:
        self.query_one("#confirm-yes", Button).disabled = not event.value.strip()

    @on(Input.Submitted, "#confirm-reason")
    def _reason_submitted(self) -> None:
        self.action_confirm()

    @on(Button.Pressed, "#confirm-yes")
    def _yes(self) -> None:
        self.action_confirm()

    @on(Button.Pressed, "#confirm-no")
    def _no(self) -> None:
        self.action_cancel()

    def action_confirm(self) -> None:
        p = self.preview
        if p.error is not None:
            return
        if p.refused:
            reason = self.query_one("#confirm-reason", Input).value.strip()
            if not reason:
                self.notify("a forced edit needs a reason", severity="warning")
                return
            self.dismiss(Answer(force=True, reason=reason))
        else:
            self.dismiss(Answer())

    def action_cancel(self) -> None:
        self.dismiss(None)
