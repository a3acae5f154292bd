"""What the user chose that changes what the tables show (sorts, filters, units, the drilled-down service)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lvstop.model import ServiceKey

if TYPE_CHECKING:
    from lvstop.tui.viewmodel.table import Column


@dataclass(frozen=True, slots=True)
class SortSpec:
    column: str
    reverse: bool

    def toggled(self, column: Column) -> SortSpec:
        """A header click: same column flips the order, a new one starts hottest/first."""
        if column.id == self.column:
            return SortSpec(column.id, not self.reverse)
        return SortSpec(column.id, column.numeric)


@dataclass(frozen=True, slots=True)
class ViewSettings:
    """Everything the user chose that changes what the tables show."""

    human: bool = True
    names: bool = False
    instant: bool = False
    services_sort: SortSpec = SortSpec("cps", True)
    dests_sort: SortSpec = SortSpec("address", False)
    events_sort: SortSpec = SortSpec("time", True)
    services_filter: str = ""
    dests_filter: str = ""
    events_filter: str = ""
    service: ServiceKey | None = None  # the drilled-down service
