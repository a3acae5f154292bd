"""The one table of keys: Textual bindings, the help screen and the command palette are built from it.

Every key has a kebab-case id (so a keymap can rebind it), an area and a verb (the palette reads
"area: verb") and one line of help. `scope` says which widget owns the binding: "app" for keys that
work everywhere, "director" for keys that act on the director in view.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding, BindingType


@dataclass(frozen=True, slots=True)
class Key:
    id: str
    key: str  # Textual key names, comma-separated for alternatives
    action: str
    area: str
    verb: str
    help: str
    display: str
    scope: str = "director"
    footer: bool = False
    palette: bool = True
    priority: bool = False  # before any widget's own binding (the filter input's ctrl+c copies)


KEYS: tuple[Key, ...] = (
    Key(
        "help", "question_mark,f1", "help", "app", "help", "Show every key and what it does", "?", "app", True
    ),
    Key("quit", "q", "quit", "app", "quit", "Quit lvstop (the terminal is restored)", "q", "app", True),
    Key(
        "interrupt",
        "ctrl+c",
        "quit",
        "app",
        "quit",
        "Quit, as in htop or ipvsadm (q works too)",
        "ctrl+c",
        "app",
        palette=False,
        priority=True,
    ),
    Key(
        "next-director",
        "greater_than_sign",
        "next_director",
        "app",
        "next director",
        "Next director tab (with --connect)",
        ">",
        "app",
    ),
    Key(
        "previous-director",
        "less_than_sign",
        "previous_director",
        "app",
        "previous director",
        "Previous director tab",
        "<",
        "app",
    ),
    Key(
        "show-services",
        "1",
        "show('services')",
        "view",
        "services",
        "Virtual services: which are hot, which have no live dest",
        "1",
    ),
    Key(
        "show-connections",
        "2",
        "show('conns')",
        "view",
        "connections",
        "Connection table: states, per dest, top clients, templates",
        "2",
    ),
    Key(
        "show-director",
        "3",
        "show('director')",
        "view",
        "director",
        "Sync daemons, timeouts and sysctls, each explained",
        "3",
    ),
    Key(
        "show-events",
        "4",
        "show('events')",
        "view",
        "events",
        "What changed and when: dests, weights, resets, poll failures",
        "4",
    ),
    Key(
        "back",
        "escape",
        "back",
        "view",
        "back",
        "Clears the kept filter if there is one, else back one level (connections, dests, services)",
        "esc",
        footer=False,
        palette=False,
    ),
    Key(
        "filter",
        "slash",
        "filter",
        "table",
        "filter",
        "Filter the rows of this table (Enter keeps it)",
        "/",
        footer=True,
        priority=True,  # handled as it arrives, so the keys typed right after it reach the filter
    ),
    Key(
        "sort-menu",
        "f6,o",
        "sort_menu",
        "table",
        "sort by…",
        "Pick the sort column from a list (F6 as in htop, or o)",
        "F6/o",
        footer=True,
    ),
    Key(
        "sort-next",
        "s",
        "sort(1)",
        "table",
        "sort by next column",
        "Sort by the next column (or click a column header)",
        "s",
    ),
    Key("sort-reverse", "S", "sort_reverse", "table", "reverse sort", "Reverse the sort order", "S"),
    Key(
        "pause",
        "space",
        "pause",
        "view",
        "pause",
        "Freeze the tables; the header stays live",
        "space",
        footer=True,
    ),
    Key(
        "names",
        "n",
        "flip('names')",
        "view",
        "numeric/names",
        "Numeric addresses or resolved names (resolved in the background)",
        "n",
    ),
    Key(
        "exact",
        "e",
        "flip('human')",
        "view",
        "exact/human numbers",
        "Exact numbers or human units (1.2k, 34 MB)",
        "e",
    ),
    Key(
        "rates",
        "r",
        "flip('instant')",
        "view",
        "smoothed/instant rates",
        "The kernel's smoothed rates (2 s EWMA) or plain rates over the last poll",
        "r",
    ),
    Key("slower", "plus", "interval(2.0)", "poll", "slower refresh", "Poll half as often", "+"),
    Key("faster", "minus", "interval(0.5)", "poll", "faster refresh", "Poll twice as often", "-"),
    Key(
        "drain",
        "d",
        "drain",
        "dest",
        "drain",
        "Weight 0 for the selected dest; its weight is remembered",
        "d",
        footer=True,
    ),
    Key(
        "restore",
        "u",
        "restore",
        "dest",
        "restore",
        "Give a drained dest its remembered weight back",
        "u",
        footer=True,
    ),
    Key(
        "set-weight",
        "w",
        "set_weight",
        "dest",
        "set weight",
        "Set the selected dest's weight",
        "w",
    ),
    Key("replay-step", "full_stop", "step", "replay", "step", "Paused replay: show the next snapshot", "."),
    Key("replay-faster", "right_square_bracket", "speed(2.0)", "replay", "faster", "Play twice as fast", "]"),
    Key("replay-slower", "left_square_bracket", "speed(0.5)", "replay", "slower", "Play half as fast", "["),
)


def bindings(scope: str) -> list[BindingType]:
    return [
        Binding(
            k.key,
            k.action,
            k.verb,
            show=k.footer,
            key_display=k.display,
            priority=k.priority,
            id=k.id,
            tooltip=k.help,
        )
        for k in KEYS
        if k.scope == scope
    ]


def palette_title(k: Key) -> str:
    return f"{k.area}: {k.verb}"
