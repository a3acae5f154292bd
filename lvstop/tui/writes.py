"""Weight edits from the TUI: what the user asked for, its dry-run preview, and the local writer.

Nothing here decides whether an edit is allowed: Control does (guard, compare-and-set). The preview
runs Control's own dry run, so the dialog shows exactly what Control would do or refuse.
"""

from __future__ import annotations

import getpass
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lvstop.codec import service_key_to_dict
from lvstop.control import (
    ControlResult,
    dest_key_to_dict,
    drains_from_dict,
)
from lvstop.errors import ControlError, LvstopError, ParseError
from lvstop.exporter.openapi import CSRF_HEADER
from lvstop.model import DestKey, ServiceKey
from lvstop.sources.remote import PREVIEW_PATH, RemoteSource, basic_auth, edit_preview, edit_result, urlopen
from lvstop.tui.viewmodel import DrainMap, WeightEffect

if TYPE_CHECKING:
    from lvstop.control import Control
    from lvstop.tui.feed import Writer

SNAPSHOT_PATH = "/api/v1/snapshot"

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

    @property
    def button(self) -> str:
        """What the confirming button says: the verb, with the new weight for a set."""
        return f"Set weight {self.weight}" if self.kind == "set_weight" else self.verb

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
    if isinstance(writer, RemoteWriter) and (asked := writer.preview(op, effect)) is not None:
        return asked  # the exporter's preview: two dry runs there would be two audited attempts
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

    def drains(self) -> DrainMap:
        return self.control.drains()


class RemoteWriter:
    """Edits through a remote lvstop-exporter's write API (POST {url}/api/v1/drain|restore|weight).

    The exporter runs the same Control (guard, compare-and-set, drain state) and names the actor from
    the credential in the URL, never from us. Refusals come back as ControlError with the HTTP status.
    """

    TIMEOUT = 10.0

    def __init__(self, url: str) -> None:
        self.base = RemoteSource(url).url.removesuffix(SNAPSHOT_PATH)
        self._headers = {"Content-Type": "application/json", CSRF_HEADER: "lvstop-tui", **basic_auth(url)}

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base}{path}", data=data, method=method, headers=self._headers)
        try:
            with urlopen(req, self.TIMEOUT) as resp:
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("error", e.reason)
            except (ValueError, AttributeError):
                message = e.reason
            raise ControlError(f"{self.base}: {message}", status=e.code) from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise ControlError(f"{self.base}: {getattr(e, 'reason', e)}", status=503) from None
        if not isinstance(doc, dict):
            raise ControlError(f"{self.base}{path}: the reply is not a JSON object", status=502)
        return doc

    def _edit(self, path: str, skey: ServiceKey, dkey: DestKey, kw: dict[str, Any]) -> ControlResult:
        body = {"service": service_key_to_dict(skey), "dest": dest_key_to_dict(dkey), **kw}
        return edit_result(self._call("POST", path, body), f"{self.base}{path}")

    def preview(self, op: WriteOp, effect: WeightEffect | None) -> Preview | None:
        """The exporter's preview (no attempt, no audit line); None from an exporter too old to have one."""
        body = {"action": op.kind, "service": service_key_to_dict(op.service), "expect": op.expect}
        body |= {"dest": dest_key_to_dict(op.dest), **({} if op.weight is None else {"weight": op.weight})}
        try:
            doc = self._call("POST", PREVIEW_PATH, body)
        except ControlError as e:
            if e.status == 404:
                return None
            return Preview(op, error=str(e), effect=effect)
        result, refused, error = edit_preview(doc, f"{self.base}{PREVIEW_PATH}")
        return Preview(op, result, refused, error, effect)

    def drain(self, skey: ServiceKey, dkey: DestKey, **kw: Any) -> ControlResult:
        return self._edit("/api/v1/drain", skey, dkey, kw)

    def restore(self, skey: ServiceKey, dkey: DestKey, **kw: Any) -> ControlResult:
        return self._edit("/api/v1/restore", skey, dkey, kw)

    def set_weight(self, skey: ServiceKey, dkey: DestKey, weight: int, **kw: Any) -> ControlResult:
        return self._edit("/api/v1/weight", skey, dkey, {"weight": weight, **kw})

    def drains(self) -> DrainMap:
        doc = self._call("GET", "/api/v1/drains")
        try:
            return drains_from_dict(doc)
        except ParseError as e:
            raise ControlError(f"{self.base}/api/v1/drains: unexpected reply: {e}", status=502) from None
