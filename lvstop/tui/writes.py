"""Weight edits from the TUI: what the user asked for, its dry-run preview, and the local writer.

Nothing here decides whether an edit is allowed: Control does (guard, compare-and-set). The preview
runs Control's own dry run, so the dialog shows exactly what Control would do or refuse.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lvstop.errors import LvstopError
from lvstop.model import DestKey, ServiceKey
from lvstop.tui.viewmodel import WeightEffect

if TYPE_CHECKING:
    from lvstop.control import Control, ControlResult
    from lvstop.tui.feed import Writer

FORCE_PROBE_REASON = "preview"  # dry runs only: tells a guard refusal from other refusals


def tui_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = "unknown"
    return f"tui:{user}"


@dataclass(frozen=True, slots=True)
class WriteOp:
    kind: str  # drain | restore | set_weight
    service: ServiceKey
    dest: DestKey
    expect: int  # the weight the user saw: Control refuses if it moved meanwhile
    weight: int | None = None  # set_weight only

    @property
    def verb(self) -> str:
        return {"drain": "Drain", "restore": "Restore", "set_weight": "Set weight of"}[self.kind]

    def call(
        self, writer: Writer, *, dry_run: bool, force: bool = False, reason: str | None = None
    ) -> ControlResult:
        kw: dict[str, Any] = {"expect": self.expect, "force": force, "reason": reason, "dry_run": dry_run}
        if self.kind == "drain":
            return writer.drain(self.service, self.dest, **kw)
        if self.kind == "restore":
            return writer.restore(self.service, self.dest, **kw)
        assert self.weight is not None
        return writer.set_weight(self.service, self.dest, self.weight, **kw)


@dataclass(frozen=True, slots=True)
class Preview:
    op: WriteOp
    result: ControlResult | None = None  # Control's dry run (forced when `refused`)
    refused: str | None = None  # a guard refusal: forcing with a reason would go through
    error: str | None = None  # refused whatever the force (stale weight, gone, not drained, I/O)
    effect: WeightEffect | None = None


def preview(op: WriteOp, writer: Writer, effect: WeightEffect | None) -> Preview:
    """Dry-run the edit; if refused, dry-run it forced to learn whether only the guard stands in the way."""
    try:
        return Preview(op, op.call(writer, dry_run=True), effect=effect)
    except LvstopError as first:
        try:
            forced = op.call(writer, dry_run=True, force=True, reason=FORCE_PROBE_REASON)
        except LvstopError:
            return Preview(op, error=str(first), effect=effect)
        return Preview(op, forced, refused=str(first), effect=effect)


class LocalWriter:
    """Edits through lvstop.control.Control on this host; the actor is the TUI's user."""

    def __init__(self, control: Control, actor: str | None = None) -> None:
        self.control = control
        self.actor = actor or tui_actor()

    def drain(self, skey: ServiceKey, dkey: DestKey, **kw: Any) -> ControlResult:
        return self.control.drain(skey, dkey, actor=self.actor, **kw)

    def restore(self, skey: ServiceKey, dkey: DestKey, **kw: Any) -> ControlResult:
        return self.control.restore(skey, dkey, actor=self.actor, **kw)

    def set_weight(self, skey: ServiceKey, dkey: DestKey, weight: int, **kw: Any) -> ControlResult:
        return self.control.set_weight(skey, dkey, weight, actor=self.actor, **kw)

    def drains(self) -> Mapping[tuple[ServiceKey, DestKey], int]:
        return {k: rec.previous for k, rec in self.control.drains().items()}
