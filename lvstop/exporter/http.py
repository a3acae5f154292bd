"""HTTP: /metrics, the JSON API and the write API, on a read listener and (optionally) a write listener.

Write requests pass, in this order: POST only, a listener that serves writes, a JSON content type, the
CSRF defences (Origin, custom header), authentication (unverified credentials rate limited per network
before bcrypt), the user's own rate limit, the role, the body, and finally Control. Every attempt gets one
audit line, except refusals before a verified credential past their per-network budget: those are
counted and summed up in one line per burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qs

import h11

from lvstop import __version__
from lvstop.codec import service_key_to_dict
from lvstop.control import (
    MAX_WEIGHT,
    ControlResult,
    EditError,
    dest_key_from_dict,
    dest_key_to_dict,
    manager_warnings,
    service_key_from_dict,
)
from lvstop.errors import ControlError, LvstopError
from lvstop.events import Event
from lvstop.exporter.audit import AuditLog
from lvstop.exporter.auth import (
    Authenticator,
    Principal,
    RateLimiter,
    Role,
    Throttled,
    WebConfig,
    network_of,
    san_allowed,
)
from lvstop.exporter.core import Exporter
from lvstop.exporter.metrics import Body
from lvstop.exporter.openapi import CSRF_HEADER, document
from lvstop.exporter.ramp import Ramp, Ramps
from lvstop.model import DestKey, ServiceKey

log = logging.getLogger("lvstop.exporter")

MAX_BODY = 64 << 10
MAX_HEAD = 64 << 10  # a request line and headers (http.server's limit was 64 KiB a line)
HEAD_DEADLINE = 10.0  # seconds for a whole request (head, then body), however slowly it comes
WRITE_STALL = 30.0  # seconds an answer may wait for its client to read on
WORKERS = 8  # threads per listener answering complete requests; waiting clients take none
LISTEN_BACKLOG = 128
READ_SIZE = 64 << 10
WRITE_SIZE = 64 << 10  # an answer goes out in slices: a slow reader holds one slice, not the page
_STATUSES = {s.value for s in HTTPStatus}
# Write attempts refused before a credential was verified (wrong method or listener, no or bad password,
# oversize...): audit lines per network, one a second after a burst; past that, one 429 each and a
# single line per burst saying how many were not logged one by one. The metrics count every attempt.
REFUSED_RATE = 1.0
REFUSED_BURST = 10
_JSON = "application/json"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WRITE_ROUTES = {
    "/api/v1/weight": "set_weight",
    "/api/v1/drain": "drain",
    "/api/v1/restore": "restore",
    "/api/v1/ramps": "ramp",
}
PREVIEWED = ("drain", "restore", "set_weight")
FORCE_PREVIEW_REASON = "preview"  # the forced dry run that tells a guard refusal from the others
_DIGITS = re.compile(r"[0-9]{1,9}")  # str.isdigit() also takes "²", which int() refuses
_CANCEL = re.compile(r"^/api/v1/ramps/([A-Za-z0-9_-]{1,64})/cancel$")
READ_ROUTES = (
    "/",
    "/metrics",
    "/-/healthy",
    "/-/ready",
    "/api/v1/snapshot",
    "/api/v1/events",
    "/api/v1/drains",
    "/api/v1/status",
    "/api/v1/health",
    "/api/v1/managed",
    "/api/v1/ramps",
    "/api/v1/openapi.json",
)
PREVIEW_ROUTE = "/api/v1/preview"  # checked like a write, answered like a read
_COMMON_KEYS = {"service", "dest", "expect", "force", "reason", "dry_run"}
_BODY_KEYS = {
    "set_weight": _COMMON_KEYS | {"weight"},
    "drain": _COMMON_KEYS,
    "restore": _COMMON_KEYS,
    "ramp": _COMMON_KEYS | {"weight", "duration", "steps"},
    "ramp_cancel": set(),
    "preview": {"action", "service", "dest", "expect", "weight"},
}
_LANDING = b"""<!doctype html><html><head><title>lvstop exporter</title></head><body><h1>lvstop exporter</h1>
<ul><li><a href="/metrics">/metrics</a></li><li><a href="/api/v1/snapshot">/api/v1/snapshot</a></li>
<li><a href="/api/v1/events">/api/v1/events</a></li><li><a href="/api/v1/drains">/api/v1/drains</a></li>
<li><a href="/api/v1/status">/api/v1/status</a></li>
<li><a href="/api/v1/health">/api/v1/health</a></li><li><a href="/api/v1/managed">/api/v1/managed</a></li>
<li><a href="/api/v1/openapi.json">/api/v1/openapi.json</a></li>
</ul></body></html>
"""


class Refused(Exception):
    """A write attempt stopped before or by Control; carries the HTTP status."""

    def __init__(
        self, status: int, message: str, old: int | None = None, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.old = old
        self.headers = headers or {}


@dataclass(slots=True)
class Attempt:
    """What the audit line of one write attempt says."""

    action: str
    source: str
    actor: str | None = None
    service: ServiceKey | None = None
    dest: DestKey | None = None
    requested: int | None = None
    force: bool | None = None
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WriteSettings:
    enabled: bool = False
    allowed_origins: tuple[str, ...] = ()


def event_to_dict(e: Event) -> dict[str, Any]:
    return {
        "time": e.time,
        "kind": e.kind,
        "message": e.message,
        "service": None if e.service is None else service_key_to_dict(e.service),
        "dest": None if e.dest is None else dest_key_to_dict(e.dest),
        "old": e.old,
        "new": e.new,
        "actor": e.actor,
    }


def result_to_dict(r: ControlResult) -> dict[str, Any]:
    return {
        "action": r.action,
        "outcome": r.outcome,
        "service": service_key_to_dict(r.service),
        "dest": dest_key_to_dict(r.dest),
        "old": r.old,
        "requested": r.requested,
        "verified": r.verified,
        "previous": r.previous,
        "active_conns": r.active_conns,
        "warnings": list(r.warnings),
    }


def _retry_after(wait: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, round(wait)))}


def _outcome(status: int) -> str:
    return "rejected" if status < 500 else "failed"


class App:
    """The request logic shared by both listeners; the handler only moves bytes."""

    def __init__(
        self,
        exporter: Exporter,
        *,
        web: WebConfig,
        auth: Authenticator,
        audit: AuditLog,
        limiter: RateLimiter,
        writes: WriteSettings,
        ramps: Ramps | None = None,
        max_requests: int = 40,
    ) -> None:
        self.exporter = exporter
        self.web = web
        self.auth = auth
        self.audit = audit
        self.limiter = limiter
        self.writes = writes
        self.ramps = ramps
        self._scrapes = threading.BoundedSemaphore(max_requests) if max_requests > 0 else None
        self.refused = RateLimiter(REFUSED_RATE, REFUSED_BURST)
        self._unlogged: dict[str, int] = {}  # network -> refused attempts not audited one by one
        self._unlogged_lock = threading.Lock()
        self.openapi = json.dumps(document()).encode()

    def reconfigure(self, web: WebConfig) -> None:
        """A re-read web config: users, roles and headers from now on (clients keep their guess budgets)."""
        self.auth = Authenticator(web, guesses=self.auth.guesses, all_guesses=self.auth.all_guesses)
        self.web = web

    # --- writes ---

    def attempt(
        self,
        action: str,
        method: str,
        body: bytes | None,
        headers: Any,
        source: str,
        listener_writes: bool,
        param: str = "",
        oversize: bool = False,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """One write attempt, start to audit line: (status, JSON payload, extra headers)."""
        att = Attempt(action, source)
        try:
            if oversize:
                raise Refused(413, f"the body must be at most {MAX_BODY} bytes")
            payload, status = self._attempt(att, method, body, headers, listener_writes, param)
        except Refused as r:
            wait = self._refusal_wait(att) if att.actor is None else 0.0
            if wait > 0:
                self.exporter.record_edit("rejected")
                return 429, {"error": "too many refused write attempts; slow down"}, _retry_after(wait)
            self._audit(att, _outcome(r.status), r.status, error=str(r), old=r.old)
            return r.status, {"error": str(r)}, r.headers
        except Exception as e:  # a bug, not a refusal: still one audit line, as a failed attempt
            log.exception("internal error in a %s attempt", action)
            self._audit(att, "failed", 500, error=f"internal error: {type(e).__name__}")
            return 500, {"error": "internal error"}, {}
        return status, payload, {}

    def _attempt(
        self, att: Attempt, method: str, body: bytes | None, headers: Any, listener_writes: bool, param: str
    ) -> tuple[dict[str, Any], int]:
        who, doc = self._check(att, method, body, headers, listener_writes)
        return self._apply(att, doc, who, param)

    def _check(
        self, att: Attempt, method: str, body: bytes | None, headers: Any, listener_writes: bool
    ) -> tuple[Principal, dict[str, Any]]:
        """Every rule before Control, in order: (the verified principal, the parsed body), or Refused."""
        if method != "POST":
            raise Refused(405, f"use POST for {att.action}", headers={"Allow": "POST"})
        if not (self.writes.enabled and listener_writes):
            raise Refused(403, "writes are not served on this listener")
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        bodyless = att.action == "ramp_cancel" and not body  # nothing to say but "stop"
        if ctype != "application/json" and not bodyless:
            raise Refused(415, "the body must be application/json")
        origin = headers.get("Origin")
        if origin is not None and origin not in self.writes.allowed_origins:
            raise Refused(403, f"Origin {origin} is not allowed to write")
        if not (headers.get(CSRF_HEADER) or "").strip():
            raise Refused(403, f"the {CSRF_HEADER} header is required on writes")
        try:
            who = self.auth.check(headers.get("Authorization"), att.source)
        except Throttled as t:
            raise Refused(429, str(t), headers=_retry_after(t.wait)) from None
        if who is None:
            raise Refused(
                401, "authentication required", headers={"WWW-Authenticate": 'Basic realm="lvstop"'}
            )
        att.actor = who.user
        # Charged after the credential: strangers cannot spend a verified user's budget. A preview
        # changes nothing, so it spends none: opening a dialog must not cost the drain that follows.
        wait = (
            0.0
            if att.action == "preview"
            else self.limiter.allow(f"user {who.user}" if self.web.auth else network_of(att.source))
        )
        if wait > 0:
            raise Refused(429, "too many write requests; slow down", headers=_retry_after(wait))
        if who.role < Role.OPERATOR:
            raise Refused(403, f"user {who.user} may only read")
        if body is None and not bodyless:
            raise Refused(411, "a Content-Length is required")
        doc = self._parse(att, body or b"")
        if att.force and who.role < Role.ADMIN:
            raise Refused(403, f"user {who.user} may not force (admin only)")
        return who, doc

    def _parse(self, att: Attempt, body: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise Refused(400, "the body is not valid JSON") from None
        if not isinstance(doc, dict):
            raise Refused(400, "the body must be a JSON object")
        unknown = set(doc) - _BODY_KEYS[att.action]
        if unknown:
            raise Refused(400, f"unknown field(s): {', '.join(sorted(unknown))}")
        if att.action == "ramp_cancel":
            return doc
        if att.action == "preview" and doc.get("action") not in PREVIEWED:
            raise Refused(400, f"action must be one of {', '.join(PREVIEWED)}")
        try:
            att.service = service_key_from_dict(doc.get("service"))
            att.dest = dest_key_from_dict(doc.get("dest"))
        except (ValueError, KeyError) as e:
            raise Refused(400, f"bad service or dest: {e}") from None
        for key in ("force", "dry_run"):
            if key in doc and type(doc[key]) is not bool:
                raise Refused(400, f"{key} must be true or false")
        reason = doc.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
            raise Refused(400, "reason must be a string of at most 500 characters")
        att.force, att.reason = doc.get("force", False), reason
        for key in ("weight", "expect"):  # the request's fault, whether or not the dest exists
            value = doc.get(key)
            if (key in doc if key == "weight" else value is not None) and not (
                type(value) is int and 0 <= value <= MAX_WEIGHT
            ):
                raise Refused(400, f"{key} must be an integer 0..{MAX_WEIGHT}, not {value!r}")
        if att.action == "preview" and "weight" in doc and doc["action"] != "set_weight":
            raise Refused(400, f"weight is for set_weight, not {doc['action']}")
        if "weight" in doc:
            att.requested = doc["weight"]
        elif att.action in ("set_weight", "ramp") or doc.get("action") == "set_weight":
            raise Refused(400, "weight is required")
        return doc

    def _apply(
        self, att: Attempt, doc: dict[str, Any], who: Principal, param: str
    ) -> tuple[dict[str, Any], int]:
        control = self.exporter.control
        if control is None:
            raise Refused(503, "this exporter has no write path (its source cannot write)")
        kw: dict[str, Any] = {
            "expect": doc.get("expect"),
            "force": att.force,
            "reason": att.reason,
            "dry_run": doc.get("dry_run", False),
            "actor": who.user,
        }
        assert att.service is not None or att.action == "ramp_cancel"
        try:
            if att.action == "ramp_cancel":
                return self._cancel(att, param)
            if att.action == "ramp":
                return self._ramp(att, doc, kw)
            res = self._edit(att.action, att, doc, kw)
        except ControlError as e:
            raise Refused(e.status, str(e), old=e.old if isinstance(e, EditError) else None) from None
        except LvstopError as e:
            raise Refused(500, str(e)) from None
        self._audit(att, res.outcome, 200, old=res.old, requested=res.requested, verified=res.verified)
        return result_to_dict(res), 200

    def _edit(self, action: str, att: Attempt, doc: dict[str, Any], kw: dict[str, Any]) -> ControlResult:
        control = self.exporter.control
        assert control is not None and att.service is not None and att.dest is not None
        if action == "set_weight":
            return control.set_weight(att.service, att.dest, doc["weight"], **kw)
        if action == "drain":
            return control.drain(att.service, att.dest, **kw)
        return control.restore(att.service, att.dest, **kw)

    def preview(
        self, method: str, body: bytes | None, headers: Any, source: str, listener_writes: bool
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """What an edit would do, for a dialog about to ask: Control's dry run, and when it is refused, a
        forced one (for an admin, who may force) to tell a guard refusal from the others. Checked like a
        write (it shows the write path), but not an attempt: no audit line, no edit counted, no write
        budget spent."""
        att = Attempt("preview", source)
        try:
            who, doc = self._check(att, method, body, headers, listener_writes)
            if self.exporter.control is None:
                raise Refused(503, "this exporter has no write path (its source cannot write)")
            action = doc["action"]
            kw: dict[str, Any] = {"expect": doc.get("expect"), "dry_run": True, "actor": who.user}
            try:
                res = self._edit(action, att, doc, kw)
                return 200, {"result": result_to_dict(res), "refused": None, "error": None}, {}
            except ControlError as first:
                refusal = first
            if who.role >= Role.ADMIN:
                with contextlib.suppress(ControlError):
                    forced = self._edit(
                        action, att, doc, {**kw, "force": True, "reason": FORCE_PREVIEW_REASON}
                    )
                    return 200, {"result": result_to_dict(forced), "refused": str(refusal), "error": None}, {}
            error = {"status": refusal.status, "message": str(refusal)}
            return 200, {"result": None, "refused": None, "error": error}, {}
        except Refused as r:
            return r.status, {"error": str(r)}, r.headers
        except LvstopError as e:
            return 500, {"error": str(e)}, {}

    def _ramp(self, att: Attempt, doc: dict[str, Any], kw: dict[str, Any]) -> tuple[dict[str, Any], int]:
        if self.ramps is None:
            raise Refused(503, "ramps are not available")
        assert att.service is not None and att.dest is not None
        if "duration" not in doc:
            raise Refused(400, "duration is required")
        check, ramp, plan = self.ramps.start(
            att.service, att.dest, doc["weight"], doc["duration"], doc.get("steps"), **kw
        )
        steps = [{"at": at, "weight": w} for at, w in plan]
        outcome = "dry_run" if kw["dry_run"] else ("started" if ramp is not None else "unchanged")
        audit_outcome = {"started": "applied"}.get(outcome, outcome)
        self._audit(att, audit_outcome, 202 if ramp else 200, old=check.old, requested=doc["weight"])
        payload = {
            "outcome": outcome,
            "plan": steps,
            "ramp": ramp.to_dict() if ramp else None,
            "warnings": list(check.warnings),
        }
        return payload, 202 if ramp is not None else 200

    def _cancel(self, att: Attempt, ramp_id: str) -> tuple[dict[str, Any], int]:
        if self.ramps is None:
            raise Refused(503, "ramps are not available")
        ramp = self.ramps.cancel(ramp_id)
        att.service, att.dest = ramp.service, ramp.dest
        self._audit(att, "applied", 200, old=ramp.current)
        return {"outcome": "cancelled", "plan": [], "ramp": ramp.to_dict(), "warnings": []}, 200

    def ramp_step(self, ramp: Ramp, weight: int, res: ControlResult | None, err: LvstopError | None) -> None:
        att = Attempt(
            "ramp_step",
            f"ramp {ramp.id}",
            ramp.actor,
            ramp.service,
            ramp.dest,
            weight,
            ramp.force,
            ramp.reason,
        )
        if res is not None:
            self._audit(att, res.outcome, 200, old=res.old, verified=res.verified)
        else:
            status = err.status if isinstance(err, ControlError) else 500
            self._audit(att, _outcome(status), status, error=str(err), old=getattr(err, "old", None))

    def _refusal_wait(self, att: Attempt) -> float:
        """0 when a refusal before any verified credential gets its own audit line (after a line saying
        how many did not, if some did not), else the seconds its network must wait: it is not logged."""
        net = network_of(att.source)
        wait = self.refused.allow(net)
        if wait > 0:
            with self._unlogged_lock:
                self._unlogged[net] = self._unlogged.get(net, 0) + 1
            return wait
        with self._unlogged_lock:
            skipped = self._unlogged.pop(net, 0)
        if skipped:
            self.audit.write(
                source=net,
                action="flood",
                outcome="rejected",
                status=429,
                error=f"{skipped} refused write attempts from {net} were answered 429, not logged one by one",
            )
        return 0.0

    def _audit(self, att: Attempt, outcome: str, status: int, **fields: Any) -> None:
        self.audit.write(
            actor=att.actor,
            source=att.source,
            action=att.action,
            outcome=outcome,
            status=status,
            service=None if att.service is None else service_key_to_dict(att.service),
            dest=None if att.dest is None else dest_key_to_dict(att.dest),
            requested=fields.pop("requested", att.requested),
            force=att.force,
            reason=att.reason,
            **fields,
        )
        if att.action != "ramp_step":
            self.exporter.record_edit(outcome if outcome != "dry_run" else "dry_run")

    # --- reads ---

    def authorize_read(self, headers: Any, client: str) -> Principal | None:
        """Raises Throttled (answer 429) when `client` guessed too many credentials."""
        return self.auth.check(headers.get("Authorization"), client)

    def scrape_slot(self) -> bool:
        return self._scrapes is None or self._scrapes.acquire(blocking=False)

    def scrape_done(self) -> None:
        if self._scrapes is not None:
            self._scrapes.release()

    def events(self, query: str) -> tuple[int, dict[str, Any]]:
        raw = parse_qs(query, keep_blank_values=True).get("limit", ["100"])[-1]  # "limit=" is an error
        if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= 1000:
            return 400, {"error": "limit must be an integer 1..1000"}
        return 200, {"events": [event_to_dict(e) for e in self.exporter.events.recent(int(raw))]}

    def drains(self) -> tuple[int, dict[str, Any]]:
        control = self.exporter.control
        try:
            drains = control.drains() if control is not None else {}
        except LvstopError as e:
            return 500, {"error": str(e)}
        snap = self.exporter.poller.fresh()  # drain progress as of now
        out = []
        for (skey, dkey), rec in sorted(drains.items()):
            svc = snap.service(skey) if snap is not None else None
            d = svc.dest(dkey) if svc is not None else None
            out.append(
                {
                    "service": service_key_to_dict(skey),
                    "dest": dest_key_to_dict(dkey),
                    "previous": rec.previous,
                    "since": rec.since,
                    "actor": rec.actor,
                    "reason": rec.reason,
                    "cause": rec.cause,
                    "weight": d.weight if d else None,
                    "active_conns": d.active_conns if d else None,
                    "inactive_conns": d.inactive_conns if d else None,
                }
            )
        return 200, {"drains": out}

    def not_ready(self) -> str | None:
        """Why the exporter is not ready, or None when it is."""
        if self.exporter.poller.latest is None:
            return "no successful poll yet"
        if self.exporter.drain_error is not None:
            return f"drain state: {self.exporter.drain_error}"
        return None

    def status(self) -> tuple[int, dict[str, Any]]:
        ex = self.exporter
        snap = ex.poller.latest
        managers = ex.managers()
        warnings = list(manager_warnings(managers))
        if ex.drain_error is not None:
            warnings.append(f"drain state unusable, writes fail until it is fixed: {ex.drain_error}")
        acting = ex.health_act()
        warnings.extend(f"health does not act on {s['text']}: {s['reason']}" for s in acting["skipped"])
        if snap is not None:
            warnings.extend(i.message for i in snap.issues)
        return 200, {
            "director": snap.director if snap else None,
            "source": ex.source.name,
            "poll": {
                "success": ex.source.ok,
                "last_success": ex.source.last_success,
                "duration": ex.poller.last_duration,
                "error": ex.source.last_error,
                "seq": snap.seq if snap else None,
            },
            "writes": {
                "enabled": self.writes.enabled,
                "auth": self.web.auth,
                "ramps": self.ramps is not None,
            },
            "weight_managers": [{"name": n, "pid": p} for n, p in managers],
            "health_act": acting,
            "warnings": warnings,
        }

    def ramp_list(self) -> tuple[int, dict[str, Any]]:
        return 200, {"ramps": [r.to_dict() for r in (self.ramps.list() if self.ramps else [])]}


def accepts_gzip(header: str | None) -> bool:
    for part in (header or "").split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            q = params.strip()
            return not (q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000"))
    return False


class Headers:
    """A request's headers by case-insensitive name; of a repeated one, the first (as http.server's)."""

    def __init__(self, pairs: Iterable[tuple[bytes, bytes]]) -> None:
        self._first: dict[str, str] = {}
        for name, value in pairs:
            self._first.setdefault(name.decode("ascii").lower(), value.decode("latin-1"))

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._first.get(name.lower(), default)


@dataclass(slots=True)
class Request:
    """A complete request, as the event loop hands it to a worker."""

    method: str
    target: str
    headers: Headers
    client: str
    body: bytes | None  # None: no Content-Length (a chunked body is not read)
    oversize: bool = False  # a Content-Length past MAX_BODY: the body is not read
    unread: bool = False  # a body was left unread: the connection closes after the answer


@dataclass(slots=True)
class Reply:
    """What a worker answers; the event loop writes it. `body`: bytes, or chunks made as they are sent."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes | Iterator[bytes] = b""
    close: bool = False


class Exchange:
    """One request, routed and answered on a worker thread: the App decides, this only shapes bytes."""

    def __init__(self, server: Server, req: Request) -> None:
        self.server = server
        self.req = req
        self.headers = req.headers
        self.close = req.unread
        self.reply: Reply | None = None

    def respond(self) -> Reply:
        method = self.req.method
        try:
            self._route(method)
        except Exception:
            log.exception("internal error serving %s %s", method, self.req.target)
            self.close = True
            self._json(500, {"error": "internal error"})
        assert self.reply is not None
        return self.reply

    def _route(self, method: str) -> None:
        app = self.server.app
        req = self.req
        path, _, query = req.target.partition("?")
        cancel = _CANCEL.match(path)
        body, oversize = (req.body, req.oversize) if method == "POST" else (b"", False)
        if path == PREVIEW_ROUTE:
            if oversize:
                self._json(413, {"error": f"the body must be at most {MAX_BODY} bytes"})
                return
            self._json(*app.preview(method, body, self.headers, req.client, self.server.writes))
            return
        if cancel or (path in WRITE_ROUTES and not (path == "/api/v1/ramps" and method in ("GET", "HEAD"))):
            status, payload, headers = app.attempt(
                "ramp_cancel" if cancel else WRITE_ROUTES[path],
                method,
                None if oversize else body,
                self.headers,
                req.client,
                self.server.writes,
                cancel.group(1) if cancel else "",
                oversize,
            )
            if status == 405 and path == "/api/v1/ramps":
                headers = {**headers, "Allow": "GET, HEAD, POST"}  # the one path that also reads
            self._json(status, payload, headers)
            return
        if path not in READ_ROUTES:
            self._json(404, {"error": f"no such page: {path}"})
            return
        if method not in ("GET", "HEAD"):
            self._json(405, {"error": f"{path} is read-only"}, {"Allow": "GET, HEAD"})
            return
        try:
            who = app.authorize_read(self.headers, req.client)
        except Throttled as t:
            self._json(429, {"error": str(t)}, _retry_after(t.wait))
            return
        if who is None:
            self._json(
                401, {"error": "authentication required"}, {"WWW-Authenticate": 'Basic realm="lvstop"'}
            )
            return
        self._read(path, query)

    def _read(self, path: str, query: str) -> None:
        app = self.server.app
        if path == "/metrics":
            self._metrics()
        elif path == "/api/v1/snapshot":
            body = app.exporter.snapshot_page()
            if body is None:
                self._json(503, {"error": "no successful poll yet"})
            else:
                self._page(body, "application/json")
        elif path == "/-/healthy":
            self._send(200, b"Healthy\n", "text/plain; charset=utf-8")
        elif path == "/-/ready":
            why = app.not_ready()
            self._send(
                503 if why else 200,
                f"Not ready: {why}\n".encode() if why else b"Ready\n",
                "text/plain; charset=utf-8",
            )
        elif path == "/api/v1/openapi.json":
            self._send(200, app.openapi, "application/json")
        elif path == "/":
            self._send(200, _LANDING, "text/html; charset=utf-8")
        else:
            handlers: dict[str, Callable[[], tuple[int, dict[str, Any]]]] = {
                "/api/v1/events": lambda: app.events(query),
                "/api/v1/drains": app.drains,
                "/api/v1/status": app.status,
                "/api/v1/health": lambda: (200, app.exporter.dest_health()),
                "/api/v1/managed": lambda: (200, app.exporter.managed()),
                "/api/v1/ramps": app.ramp_list,
            }
            self._json(*handlers[path]())

    def _metrics(self) -> None:
        app = self.server.app
        if not app.scrape_slot():
            self._json(503, {"error": "too many concurrent scrapes"})
            return
        t0 = time.perf_counter()
        try:
            self._page(app.exporter.metrics_page(), METRICS_TYPE)
        finally:  # the page is ready: sending it is the event loop's, and holds no slot
            app.scrape_done()
            app.exporter.record_scrape(time.perf_counter() - t0)

    def _page(self, body: Body, ctype: str) -> None:
        if accepts_gzip(self.headers.get("Accept-Encoding")):
            self._send(200, body.gzip, ctype, {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
            return
        self._reply(200, ctype, body.size, {"Vary": "Accept-Encoding"}, body.identity_chunks())

    def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        self._send(status, data, "application/json", headers)

    def _send(self, status: int, data: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self._reply(status, ctype, len(data), headers, data)

    def _reply(
        self,
        status: int,
        ctype: str,
        length: int,
        headers: dict[str, str] | None,
        body: bytes | Iterator[bytes],
    ) -> None:
        sent = b"" if self.req.method == "HEAD" else body
        self.reply = reply(self.server.app.web, status, ctype, length, headers, sent, self.close)


def reply(
    web: WebConfig,
    status: int,
    ctype: str,
    length: int,
    headers: dict[str, str] | None,
    body: bytes | Iterator[bytes],
    close: bool,
) -> Reply:
    # Each header once: the web config's (exporter-toolkit's list) replace these defaults.
    fields = {
        "Server": f"lvstop-exporter/{__version__}",
        "Date": formatdate(usegmt=True),
        "Content-Type": ctype,
        "Content-Length": str(length),
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        **web.headers,
        **(headers or {}),
    }
    if close:
        fields["Connection"] = "close"
    return Reply(status, list(fields.items()), body, close)


def parse_listen_address(text: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (all interfaces)."""
    host, sep, port = text.rpartition(":")
    if not sep or not _DIGITS.fullmatch(port) or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {text!r} is not host:port")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            host = socket.gethostbyname(host) if host == "localhost" else host
    return host, int(port)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server:
    """One listener: an asyncio event loop reads requests, a small pool of worker threads answers them.

    Waiting costs no thread: a connection is a coroutine while it waits for its client (TLS handshake,
    request head and body, an idle keep-alive, or a client slow to read the answer); a worker thread is
    taken only for a complete request (routing, credentials, Control, a page) and given back before the
    answer is sent. The thread-per-connection server it replaces let 300 clients hold 256 threads, and
    150 that asked for /metrics and read nothing held all 40 scrape slots in blocked writes (every scrape
    503 for 30 s).

    A client gets `head_deadline` seconds for a whole request (the TLS handshake and an idle keep-alive
    wait before it, its body after its head), however slowly it sends it; then its connection is cut. An
    answer that makes no progress for WRITE_STALL seconds is cut too. When `max_connections` are open, a
    new one evicts the connection that has waited longest on its client (never one whose request a worker
    is answering). HTTP/1.1 framing is h11's (python-hyper): the parser, keep-alive and pipelining rules.
    """

    def __init__(
        self,
        address: tuple[str, int],
        app: App,
        *,
        writes: bool,
        tls: ssl.SSLContext | None,
        max_connections: int = 256,
        head_deadline: float = HEAD_DEADLINE,
        workers: int = WORKERS,
    ) -> None:
        host = address[0] or "::"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.app = app
        self.writes = writes
        self.tls = tls  # read per connection: a reload's certificates serve the next handshake
        self.max_connections = max_connections
        self.head_deadline = head_deadline
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                with contextlib.suppress(OSError):  # `:port` takes IPv4 too
                    self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            try:
                self.socket.bind((host, address[1]))
            except OSError as e:  # "[Errno 98] Address already in use" alone does not say which address
                where = f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
                raise OSError(e.errno, f"cannot listen on {where}: {e.strerror}") from None
            self.socket.listen(LISTEN_BACKLOG)
        except BaseException:
            self.socket.close()
            raise
        self.server_address: tuple[str, int] = self.socket.getsockname()[:2]
        self._loop = asyncio.new_event_loop()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=f"http-{self.server_address[1]}")
        # Open connections -> since when they wait on their client (inf: a worker has their request).
        self._conns: dict[asyncio.Task[None], float] = {}
        self._stop = asyncio.Event()
        self._shutdown = False
        self._served = threading.Event()

    # --- the loop's life, from other threads ---

    def serve_forever(self) -> None:
        """Serve in this thread until shutdown()."""
        if self._shutdown:
            return
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._served.set()

    def shutdown(self) -> None:
        """Stop serving (every connection is closed) and wait for serve_forever() to return."""
        self._shutdown = True
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._served.wait()

    def server_close(self) -> None:
        self.socket.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if not self._loop.is_running():
            self._loop.close()

    async def _serve(self) -> None:
        listener = await asyncio.start_server(self._accepted, sock=self.socket, backlog=LISTEN_BACKLOG)
        if self._shutdown:  # asked before the loop ran
            self._stop.set()
        await self._stop.wait()
        listener.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)

    # --- connections, on the loop ---

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._conns) >= self.max_connections and not self._evict():
            writer.transport.abort()  # every connection has a worker answering it: nothing to evict
            return
        self._conns[task] = self._loop.time()
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else "?"
        try:
            await self._connection(task, reader, writer, client)
        except asyncio.CancelledError:  # evicted, or shutdown: the task ends here (asyncio's streams
            log.debug("connection from %s cut", client)  # would report a cancelled one as an error)
        except (ConnectionError, TimeoutError, ssl.SSLError, h11.ProtocolError) as e:
            log.debug("connection from %s ended: %s", client, e or type(e).__name__)  # the client went away
        except Exception:
            log.exception("error serving %s", client)
        finally:
            del self._conns[task]
            writer.transport.abort()

    def _evict(self) -> bool:
        waiting = [(since, task) for task, since in self._conns.items() if since != math.inf]
        if not waiting:
            return False
        min(waiting, key=lambda x: x[0])[1].cancel()
        return True

    async def _connection(
        self,
        task: asyncio.Task[None],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: str,
    ) -> None:
        deadline = self._loop.time() + self.head_deadline
        if self.tls is not None:
            async with asyncio.timeout_at(deadline):
                await writer.start_tls(self.tls, ssl_handshake_timeout=self.head_deadline)
            allowed = self.app.web.allowed_sans
            if allowed and not san_allowed(writer.get_extra_info("peercert"), allowed):
                log.warning("%s: client certificate names none of client_allowed_sans", client)
                return
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        while True:
            self._conns[task] = self._loop.time()
            try:
                async with asyncio.timeout_at(deadline):
                    req = await self._request(conn, reader, writer, client)
            except h11.RemoteProtocolError as e:  # a malformed request: its status (400, 431...), the end
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    data = json.dumps({"error": f"bad request: {e}"}).encode()
                    bad = reply(self.app.web, e.error_status_hint, _JSON, len(data), None, data, True)
                    await self._write(conn, writer, bad)
                return
            if req is None:
                return  # the client closed, between requests
            self._conns[task] = math.inf  # a worker has it: not to be evicted
            answer = await self._loop.run_in_executor(self._pool, Exchange(self, req).respond)
            self._conns[task] = self._loop.time()  # waiting for the client to read
            await self._write(conn, writer, answer)
            if answer.close or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
            deadline = self._loop.time() + self.head_deadline

    async def _request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: str
    ) -> Request | None:
        """The next request, body included (up to MAX_BODY), or None when the client closed."""
        event = await self._event(conn, reader)
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Request)
        headers = Headers(event.headers)
        req = Request(event.method.decode("ascii"), event.target.decode("ascii"), headers, client, None)
        length = headers.get("Content-Length")  # h11 checked it: digits only
        if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
            req.unread = True  # answered (411 on a write route), then the connection closes
            return req
        if length is not None and int(length) > MAX_BODY:
            req.oversize = req.unread = True  # answered 413, then the connection closes
            return req
        if conn.they_are_waiting_for_100_continue:
            writer.write(
                conn.send(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))
            )
        parts = []
        while not isinstance(event := await self._event(conn, reader), h11.EndOfMessage):
            assert isinstance(event, h11.Data)
            parts.append(bytes(event.data))
        req.body = None if length is None else b"".join(parts)
        return req

    @staticmethod
    async def _event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
        while (event := conn.next_event()) is h11.NEED_DATA:
            conn.receive_data(await reader.read(READ_SIZE))  # b"": the client closed
        return event

    async def _write(self, conn: h11.Connection, writer: asyncio.StreamWriter, answer: Reply) -> None:
        reason = HTTPStatus(answer.status).phrase.encode() if answer.status in _STATUSES else b""
        writer.write(
            conn.send(h11.Response(status_code=answer.status, headers=answer.headers, reason=reason))
        )
        body = answer.body
        if isinstance(body, bytes):
            await self._send(conn, writer, body)
        else:  # chunks made on demand (a page kept only gzipped, inflated as it goes): on a worker
            while (chunk := await self._loop.run_in_executor(self._pool, next, body, None)) is not None:
                await self._send(conn, writer, chunk)
        writer.write(conn.send(h11.EndOfMessage()))
        async with asyncio.timeout(WRITE_STALL):
            await writer.drain()

    @staticmethod
    async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, data: bytes) -> None:
        """In slices, each sent before the next: a client slow to read holds one slice, not a page."""
        view = memoryview(data)
        for i in range(0, len(view), WRITE_SIZE):
            # h11 passes a memoryview through as it is (its hints say bytes): the page is not copied.
            for part in (
                conn.send_with_data_passthrough(h11.Data(data=cast(bytes, view[i : i + WRITE_SIZE]))) or ()
            ):
                writer.write(part)
            async with asyncio.timeout(WRITE_STALL):
                await writer.drain()

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{host}:{port}"
