"""keepalived and ldirectord as the tables show them: which manager owns a service, and, next to its
dests, the block that names it and how that manager will undo a weight set here.

`managed` maps a service to the running managers' blocks that name it (lvstop.managers.by_service);
empty when no manager runs, and then nothing here shows.
"""

from __future__ import annotations

from lvstop.managers import Claim
from lvstop.managers import ManagedMap as ManagedMap  # the dashboard names it here
from lvstop.tui.viewmodel.table import Column
from lvstop.tui.viewmodel.tones import ACCENT, WARN, Span

MANAGED_COLUMN = Column("managed", "Managed by", numeric=False, priority=3)


def managed_cell(claims: tuple[Claim, ...]) -> str:
    return ", ".join(dict.fromkeys(m.manager for _, m in claims))


def managed_notes(claims: tuple[Claim, ...], unread: tuple[str, ...]) -> list[tuple[Span, ...]]:
    """Above a service's dests: each manager that owns it, where, and how it undoes an edit made here;
    each running manager whose configuration could not be read (it may own it)."""
    notes: list[tuple[Span, ...]] = [
        (
            (f"managed by {m.manager} (pid {pid}, {m.block}, {m.where})", ACCENT),
            (f": {m.undo()}", ""),
        )
        for pid, m in claims
    ]
    notes += [((f"{line}: it may manage this service", WARN),) for line in unread]
    return notes
