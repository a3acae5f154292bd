"""`?`: every key, grouped by area, built from the same table as the bindings and the palette."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from lvstop.tui.bindings import KEYS, Key

LEGEND = (
    ("Weight 0 →5", "drained: weight 0 now, restore gives 5 back"),
    ("W% / New%", "share of the service's live weight / of its new conns per second ('no new': none)"),
    ("Live 2/3", "dests with weight > 0 / all dests; sorted, services with none or the most at 0 first"),
    ("Trend 0-40/s", "new connections per second over the last polls, from 0 to the top in the title"),
    ("Enter", "services: open the dests; connections: on a state, dest or client, narrow the list to it"),
    ("/ in 2", "connections: an address or prefix, a protocol (tcp) or a state (established)"),
)


def help_table() -> Table:
    table = Table(box=None, show_header=False, expand=True, padding=(0, 1))
    table.add_column("key", style="bold", no_wrap=True, min_width=6)
    table.add_column("what", ratio=1)
    areas: dict[str, list[Key]] = {}
    for k in KEYS:
        areas.setdefault(k.area, []).append(k)
    for area, keys in areas.items():
        table.add_row(Text(f" {area} ", style="reverse"), "")
        for k in keys:
            table.add_row(Text(k.display), Text(k.help))  # Text, not markup: keys such as "[" are literal
    table.add_row(Text(" legend ", style="reverse"), "")
    for term, meaning in LEGEND:
        table.add_row(Text(term), Text(meaning))
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "Close", id="help-close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static("lvstop keys  (esc closes; ctrl+p opens the command palette)", id="help-title")
            yield Static(help_table(), id="help-body")
