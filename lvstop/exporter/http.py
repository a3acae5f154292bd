"""HTTP: /metrics, the JSON API and the write API, on a read listener and (optionally) a write listener.

Write requests pass, in this order: POST only, a listener that serves writes, a JSON content type, the
CSRF defences (Origin, custom header), authentication (unverified credentials rate limited per network
before bcrypt), the user's own rate limit, the role, the body, and finally Control. Every attempt gets one
audit line, except refusals before a verified credential past their per-network budget: those are
counted and summed up in one line per burst.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

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
HEAD_DEADLINE = 10.0  # seconds for a whole request head, however slowly it comes
# Write attempts refused before a credential was verified (wrong method or listener, no or bad password,
# oversize...): audit lines per network, one a second after a burst; past that, one 429 each and a
# single line per burst saying how many were not logged one by one. The metrics count every attempt.
REFUSED_RATE = 1.0
REFUSED_BURST = 10
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
        snap = self.exporter.poller.latest
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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"lvstop-exporter/{__version__}"
    sys_version = ""
    timeout = 30  # seconds a client may idle mid-request
    server: Server

    def setup(self) -> None:
        self.server.head_started(self.request)  # the TLS handshake counts against the first head's deadline
        super().setup()
        allowed = self.server.app.web.allowed_sans
        if self.server.tls is not None and allowed:
            self.request.do_handshake()  # within the handler's timeout
            if not san_allowed(self.request.getpeercert(), allowed):
                log.warning(
                    "%s: client certificate names none of client_allowed_sans", self.client_address[0]
                )
                raise ConnectionRefusedError("client certificate not in client_allowed_sans")

    def handle_one_request(self) -> None:
        self.server.head_started(self.connection)
        try:
            super().handle_one_request()
        finally:
            self.server.head_done(self.connection)

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self.server.head_done(self.connection)  # the head is in: the request itself may take its time
        return ok

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_OPTIONS(self) -> None:
        self._handle("OPTIONS")  # no CORS: a browser's preflight fails, so cross-site writes never start

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # any other method (PUT, TRACE, QUERY, ...): 405, never 501
            return lambda: self._handle(name[3:])
        raise AttributeError(name)

    def _handle(self, method: str) -> None:
        try:
            self._route(method)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
            self.close_connection = True
        except Exception:
            log.exception("internal error serving %s %s", method, self.path)
            with contextlib.suppress(OSError):
                self._json(500, {"error": "internal error"})
            self.close_connection = True

    def _route(self, method: str) -> None:
        app = self.server.app
        path, _, query = self.path.partition("?")
        cancel = _CANCEL.match(path)
        if path == PREVIEW_ROUTE:
            body, oversize = self._body() if method == "POST" else (b"", False)
            if oversize:
                self._json(413, {"error": f"the body must be at most {MAX_BODY} bytes"})
                return
            self._json(*app.preview(method, body, self.headers, self.client_address[0], self.server.writes))
            return
        if cancel or (path in WRITE_ROUTES and not (path == "/api/v1/ramps" and method in ("GET", "HEAD"))):
            body, oversize = self._body() if method == "POST" else (b"", False)
            status, payload, headers = app.attempt(
                "ramp_cancel" if cancel else WRITE_ROUTES[path],
                method,
                None if oversize else body,
                self.headers,
                self.client_address[0],
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
            who = app.authorize_read(self.headers, self.client_address[0])
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
        finally:
            app.scrape_done()
            app.exporter.record_scrape(time.perf_counter() - t0)

    def _page(self, body: Body, ctype: str) -> None:
        if accepts_gzip(self.headers.get("Accept-Encoding")):
            self._send(200, body.gzip, ctype, {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
            return
        self._start(200, ctype, body.size, {"Vary": "Accept-Encoding"})
        if self.command != "HEAD":
            for chunk in body.identity_chunks():
                self.wfile.write(chunk)

    def _body(self) -> tuple[bytes | None, bool]:
        """(body, oversize): body None without Content-Length; an oversize body is left unread."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            return None, False
        raw = self.headers.get("Content-Length")
        if raw is None:
            return None, False
        if not _DIGITS.fullmatch(raw) or int(raw) > MAX_BODY:
            self.close_connection = True  # the unread body would be taken for the next request
            return None, True
        return self.rfile.read(int(raw)), False

    def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        self._send(status, data, "application/json", headers)

    def _send(self, status: int, data: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self._start(status, ctype, len(data), headers)
        if self.command != "HEAD":
            self.wfile.write(data)

    def _start(self, status: int, ctype: str, length: int, headers: dict[str, str] | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        # Each header once: the web config's (exporter-toolkit's list) replace these defaults.
        extra = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
        for k, v in {**extra, **self.server.app.web.headers, **(headers or {})}.items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()


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


class Server(ThreadingHTTPServer):
    """One listener, a thread per connection, at most `max_connections` of them.

    A client gets `head_deadline` seconds for a whole request head (the TLS handshake and an idle
    keep-alive wait included), however slowly it sends it; then its connection is cut. When every slot is
    taken, a new connection evicts the one that has waited longest for its head, so slow or idle clients
    cannot keep a scrape out (300 clients sending one header byte a second refused 40 of 40 probes).
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        app: App,
        *,
        writes: bool,
        tls: ssl.SSLContext | None,
        max_connections: int = 256,
        head_deadline: float = HEAD_DEADLINE,
    ) -> None:
        host = address[0]
        self.address_family = socket.AF_INET6 if (not host or ":" in host) else socket.AF_INET
        self.app = app
        self.writes = writes
        self.tls = tls
        self.head_deadline = head_deadline
        self._slots = threading.BoundedSemaphore(max_connections)
        self._heads: dict[socket.socket, float] = {}  # connections waiting for a head -> their deadline
        self._heads_lock = threading.Lock()
        self._closed = threading.Event()
        super().__init__((host or "::", address[1]), Handler)
        threading.Thread(target=self._reap, name=f"http-reaper-{self.server_address[1]}", daemon=True).start()

    def head_started(self, conn: socket.socket) -> None:
        with self._heads_lock:
            self._heads.setdefault(conn, time.monotonic() + self.head_deadline)

    def head_done(self, conn: socket.socket) -> None:
        with self._heads_lock:
            self._heads.pop(conn, None)

    @staticmethod
    def _cut(conn: socket.socket) -> None:
        # The plain socket's shutdown (not SSLSocket's, which drops its TLS state under a reading thread):
        # the handler's blocked read returns and its thread ends.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(conn, socket.SHUT_RDWR)

    def _reap(self) -> None:
        while not self._closed.wait(0.25):
            now = time.monotonic()
            with self._heads_lock:
                late = [c for c, deadline in self._heads.items() if deadline <= now]
                for c in late:
                    del self._heads[c]
            for c in late:
                self._cut(c)

    def _evict_oldest(self) -> bool:
        with self._heads_lock:
            if not self._heads:
                return False
            oldest = min(self._heads, key=self._heads.__getitem__)
            del self._heads[oldest]
        self._cut(oldest)
        return True

    def server_close(self) -> None:
        self._closed.set()
        super().server_close()

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            with contextlib.suppress(OSError):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # `:port` takes IPv4 too
        try:
            super().server_bind()
        except OSError as e:  # "[Errno 98] Address already in use" alone does not say which address
            host, port = str(self.server_address[0]), self.server_address[1]
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise OSError(e.errno, f"cannot listen on {where}: {e.strerror}") from None

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.tls is not None:
            # The handshake happens on the handler thread's first read: a slow client cannot stall accept().
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False) and not (
            self._evict_oldest() and self._slots.acquire(timeout=1.0)
        ):
            self.shutdown_request(request)  # every slot is serving a request: nothing to evict
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError | ssl.SSLError):
            log.debug("connection from %s ended: %s", client_address, exc)  # the client went away
        else:
            log.exception("error serving %s", client_address)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{host}:{port}"
