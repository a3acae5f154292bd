"""The OpenAPI 3.0 description of the exporter's HTTP API, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from lvstop import __version__
from lvstop.control import MAX_WEIGHT
from lvstop.exporter.ramp import MAX_DURATION, MAX_STEPS

CSRF_HEADER = "X-Lvstop-Request"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


_ERROR = _json(_ref("Error"), "Refused or failed; `error` says why")
_NULLABLE_INT = {"type": "integer", "nullable": True}
_NULLABLE_NUMBER = {"type": "number", "nullable": True}
_STATE = {"type": "string", "enum": ["up", "down", "unknown"]}
_WEIGHT = {"type": "integer", "minimum": 0, "maximum": MAX_WEIGHT}

_PORT = {"type": "integer", "minimum": 0, "maximum": 65535}


def _addressed(extra: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """An address with its (optional, derived when absent) family: one variant per family."""
    return {
        "oneOf": [
            {
                "type": "object",
                "required": ["address", *required],
                "properties": {
                    "family": {"type": "string", "enum": [fam]},
                    "address": {"type": "string", "format": fmt},
                    **extra,
                },
            }
            for fam, fmt in (("inet", "ipv4"), ("inet6", "ipv6"))
        ]
    }


_SERVICE_KEY = {
    "description": "A virtual service: protocol, address and port, or a firewall mark.",
    "oneOf": [
        *_addressed(
            {
                "protocol": {"type": "string", "enum": ["tcp", "udp", "sctp"]},
                "port": _PORT,
                "fwmark": {"type": "integer", "enum": [0]},
            },
            ["protocol", "port"],
        )["oneOf"],
        {
            "type": "object",
            "required": ["fwmark"],
            "properties": {
                "family": {"type": "string", "enum": ["inet", "inet6"], "default": "inet"},
                "fwmark": {"type": "integer", "minimum": 1, "maximum": 4294967295},
            },
        },
    ],
}
_DEST_KEY = _addressed({"port": _PORT}, ["port"])
_GUARDED = {
    "expect": {**_WEIGHT, "nullable": True, "description": "The weight you saw: if it differs now, 409."},
    "force": {
        "type": "boolean",
        "default": False,
        "description": "Override the guards (admin; needs a reason).",
    },
    "reason": {"type": "string", "nullable": True, "maxLength": 500},
    "dry_run": {"type": "boolean", "default": False, "description": "Check everything, change nothing."},
}


def _edit_request(extra: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["service", "dest", *required],
        "properties": {"service": _ref("ServiceKey"), "dest": _ref("DestKey"), **extra, **_GUARDED},
    }


# Refusals of a request to a write route before Control sees it.
_REFUSED = ("400", "401", "403", "411", "413", "415", "429", "500", "503")


def _write(
    summary: str,
    request: str,
    ok: dict[str, Any],
    extra: dict[str, Any] | None = None,
    control: tuple[str, ...] = ("404", "409"),
) -> dict[str, Any]:
    responses: dict[str, Any] = {**ok, **{code: _ERROR for code in sorted((*_REFUSED, *control))}}
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": [{"$ref": "#/components/parameters/Csrf"}],
        "responses": responses,
    }
    if request:
        op["requestBody"] = {
            "required": request != "Empty",
            "content": {"application/json": {"schema": _ref(request)}},
        }
    return {"post": op, **(extra or {})}


# Reads: credentials missing or wrong (401), or too many unverified ones from this client (429).
_DENIED: dict[str, Any] = {"401": _ERROR, "429": _ERROR}


def _read(summary: str, ok: dict[str, Any], params: list[Any] | None = None, *codes: str) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": ok, **_DENIED, **{c: _ERROR for c in codes}},
    }
    if params:
        op["parameters"] = params
    return {"get": op}


def document() -> dict[str, Any]:
    edit_ok = {"200": _json(_ref("EditResult"), "Applied, unchanged, or the plan of a dry run")}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "lvstop exporter",
            "version": __version__,
            "description": (
                "IPVS state as JSON and guarded weight edits. Writes are served only on the write listener, "
                f"need POST with an application/json body and the {CSRF_HEADER} header, and are rate limited "
                "per client before authentication; on every route, credentials not yet verified are "
                "rate limited per client (429)."
            ),
        },
        "security": [{"basicAuth": []}, {}],
        "paths": {
            "/-/healthy": {"get": {"summary": "Liveness", "responses": {"200": _text("Healthy"), **_DENIED}}},
            "/-/ready": {
                "get": {
                    "summary": "Readiness: a poll has succeeded",
                    "responses": {"200": _text("Ready"), **_DENIED, "503": _text("Not ready")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus exposition (text format 0.0.4), rendered once per poll",
                    "responses": {"200": _text("The metrics"), **_DENIED, "503": _ERROR},
                }
            },
            "/api/v1/snapshot": _read(
                "The last snapshot, as `lvstop list --json` prints it",
                _json(
                    {"type": "object", "required": ["schema", "services"]},
                    "The snapshot (lvstop.codec schema 1)",
                ),
                None,
                "503",
            ),
            "/api/v1/events": _read(
                "Recent events, oldest first",
                _json(_ref("Events"), "Events"),
                [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                    }
                ],
                "400",
            ),
            "/api/v1/drains": _read(
                "Drains in place, with their progress", _json(_ref("Drains"), "Drains"), None, "500"
            ),
            "/api/v1/status": _read(
                "Poll health, write settings and warnings", _json(_ref("Status"), "Status")
            ),
            "/api/v1/health": _read(
                "Health checks (--health.config): every checked dest's health, as `lvstop list --json` "
                "has it; `checks` false and no dests without checks",
                _json(_ref("DestHealths"), "DestHealths"),
            ),
            "/api/v1/managed": _read(
                "The services keepalived or ldirectord manage (their running configurations), and the "
                "managers whose configuration could not be read (they may manage any service)",
                _json(_ref("Managed"), "Managed"),
            ),
            "/api/v1/openapi.json": _read("This document", _json({"type": "object"}, "OpenAPI 3.0")),
            "/api/v1/weight": _write("Set a weight", "WeightRequest", edit_ok),
            "/api/v1/drain": _write(
                "Drain: weight 0, the previous weight remembered", "GuardedRequest", edit_ok
            ),
            "/api/v1/restore": _write("Put back the weight a drain remembered", "GuardedRequest", edit_ok),
            "/api/v1/preview": _write(
                "What an edit would do, for a dialog about to ask: Control's dry run (for an admin, also a "
                "forced one when a guard refuses). Checked like a write, but not an attempt: no audit line, "
                "not counted as an edit, no write budget spent",
                "PreviewRequest",
                {"200": _json(_ref("Preview"), "The dry run's result, or why Control would refuse")},
                control=(),
            ),
            "/api/v1/ramps": _write(
                "Change a weight in steps over a duration",
                "RampRequest",
                {
                    "200": _json(_ref("RampPlan"), "The plan of a dry run, or nothing to do"),
                    "202": _json(_ref("RampPlan"), "Started"),
                },
                _read("Ramps, running and finished", _json(_ref("Ramps"), "Ramps")),
            ),
            "/api/v1/ramps/{id}/cancel": {
                **_write(
                    "Stop a running ramp where it stands", "", {"200": _json(_ref("RampPlan"), "Cancelled")}
                ),
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            },
        },
        "components": {
            "securitySchemes": {"basicAuth": {"type": "http", "scheme": "basic"}},
            "parameters": {
                "Csrf": {
                    "name": CSRF_HEADER,
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1},
                    "description": "Any value: browsers cannot send it cross-site without a preflight.",
                }
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {"type": "string"},
                        "warnings": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Empty": {"type": "object", "additionalProperties": False},
                "ServiceKey": _SERVICE_KEY,
                "DestKey": _DEST_KEY,
                "GuardedRequest": _edit_request({}, []),
                "WeightRequest": _edit_request({"weight": _WEIGHT}, ["weight"]),
                "PreviewRequest": {
                    "oneOf": [
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["action", "service", "dest", *weight],
                            "properties": {
                                "action": {"type": "string", "enum": actions},
                                "service": _ref("ServiceKey"),
                                "dest": _ref("DestKey"),
                                "expect": _GUARDED["expect"],
                                **({"weight": _WEIGHT} if weight else {}),
                            },
                        }
                        for actions, weight in ((["drain", "restore"], []), (["set_weight"], ["weight"]))
                    ]
                },
                "Preview": {
                    "type": "object",
                    "required": ["result", "refused", "error"],
                    "properties": {
                        "result": {
                            "allOf": [_ref("EditResult")],
                            "nullable": True,
                            "description": "The dry run (forced, when `refused` says why it needed force)",
                        },
                        "refused": {
                            "type": "string",
                            "nullable": True,
                            "description": "A guard's refusal that force with a reason would pass (admins)",
                        },
                        "error": {
                            "type": "object",
                            "nullable": True,
                            "required": ["status", "message"],
                            "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
                            "description": "Why Control would refuse whatever the force; the edit's status",
                        },
                    },
                },
                "RampRequest": _edit_request(
                    {
                        "weight": _WEIGHT,
                        "duration": {"type": "number", "minimum": 0, "maximum": MAX_DURATION},
                        "steps": {"type": "integer", "minimum": 1, "maximum": MAX_STEPS, "nullable": True},
                    },
                    ["weight", "duration"],
                ),
                "EditResult": {
                    "type": "object",
                    "required": [
                        "action",
                        "outcome",
                        "service",
                        "dest",
                        "old",
                        "requested",
                        "verified",
                        "warnings",
                    ],
                    "properties": {
                        "action": {"type": "string", "enum": ["set_weight", "drain", "restore"]},
                        "outcome": {"type": "string", "enum": ["applied", "unchanged", "dry_run"]},
                        "service": _ref("ServiceKey"),
                        "dest": _ref("DestKey"),
                        "old": {"type": "integer"},
                        "requested": {"type": "integer"},
                        "verified": _NULLABLE_INT,
                        "previous": _NULLABLE_INT,
                        "active_conns": {"type": "integer"},
                        "warnings": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Ramp": {
                    "type": "object",
                    "required": ["id", "state", "start", "target", "current", "steps"],
                    "properties": {
                        "id": {"type": "string"},
                        "service": _ref("ServiceKey"),
                        "dest": _ref("DestKey"),
                        "start": {"type": "integer"},
                        "target": {"type": "integer"},
                        "current": {"type": "integer"},
                        "steps": {"type": "array", "items": {"type": "object"}},
                        "state": {"type": "string", "enum": ["running", "done", "cancelled", "failed"]},
                        "actor": {"type": "string"},
                        "reason": {"type": "string", "nullable": True},
                        "created": {"type": "number"},
                        "finished": {"type": "number", "nullable": True},
                        "error": {"type": "string", "nullable": True},
                    },
                },
                "RampPlan": {
                    "type": "object",
                    "required": ["outcome", "plan", "warnings"],
                    "properties": {
                        "outcome": {
                            "type": "string",
                            "enum": ["started", "dry_run", "unchanged", "cancelled"],
                        },
                        "plan": {"type": "array", "items": {"type": "object"}},
                        "ramp": {"allOf": [_ref("Ramp")], "nullable": True},
                        "warnings": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Ramps": {
                    "type": "object",
                    "required": ["ramps"],
                    "properties": {"ramps": {"type": "array", "items": _ref("Ramp")}},
                },
                "Events": {
                    "type": "object",
                    "required": ["events"],
                    "properties": {
                        "events": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["time", "kind", "message"],
                                "properties": {
                                    "time": {"type": "number"},
                                    "kind": {"type": "string"},
                                    "message": {"type": "string"},
                                    "service": {"allOf": [_ref("ServiceKey")], "nullable": True},
                                    "dest": {"allOf": [_ref("DestKey")], "nullable": True},
                                    "old": _NULLABLE_INT,
                                    "new": _NULLABLE_INT,
                                    "actor": {"type": "string", "nullable": True},
                                },
                            },
                        }
                    },
                },
                "Drains": {
                    "type": "object",
                    "required": ["drains"],
                    "properties": {
                        "drains": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["service", "dest", "previous", "since", "actor"],
                                "properties": {
                                    "service": _ref("ServiceKey"),
                                    "dest": _ref("DestKey"),
                                    "previous": {"type": "integer"},
                                    "since": {"type": "number"},
                                    "actor": {"type": "string"},
                                    "reason": {"type": "string", "nullable": True},
                                    "cause": {"type": "string", "enum": ["operator", "health"]},
                                    "weight": _NULLABLE_INT,
                                    "active_conns": _NULLABLE_INT,
                                    "inactive_conns": _NULLABLE_INT,
                                },
                            },
                        }
                    },
                },
                "DestHealths": {
                    "type": "object",
                    "required": ["checks", "dests"],
                    "properties": {
                        "checks": {"type": "boolean"},
                        "dests": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["service", "dest", "health"],
                                "properties": {
                                    "service": _ref("ServiceKey"),
                                    "dest": _ref("DestKey"),
                                    "health": _ref("DestHealth"),
                                },
                            },
                        },
                    },
                },
                "DestHealth": {
                    "type": "object",
                    "required": ["state", "since", "latency", "reason", "checks"],
                    "properties": {
                        "state": _STATE,
                        "since": _NULLABLE_NUMBER,
                        "latency": _NULLABLE_NUMBER,
                        "reason": {"type": "string"},
                        "checks": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": [
                                    "check",
                                    "state",
                                    "since",
                                    "time",
                                    "ok",
                                    "latency",
                                    "reason",
                                    "weight",
                                    "percent",
                                ],
                                "properties": {
                                    "check": {"type": "string"},
                                    "state": _STATE,
                                    "since": _NULLABLE_NUMBER,
                                    "time": _NULLABLE_NUMBER,
                                    "ok": {"type": "boolean", "nullable": True},
                                    "latency": _NULLABLE_NUMBER,
                                    "reason": {"type": "string", "nullable": True},
                                    "weight": _NULLABLE_INT,
                                    "percent": _NULLABLE_INT,
                                },
                            },
                        },
                    },
                },
                "Managed": {
                    "type": "object",
                    "required": ["services", "unread"],
                    "properties": {
                        "services": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["service", "managers"],
                                "properties": {
                                    "service": _ref("ServiceKey"),
                                    "managers": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": [
                                                "manager",
                                                "pid",
                                                "block",
                                                "where",
                                                "keeps_failed",
                                                "weights",
                                            ],
                                            "properties": {
                                                "manager": {
                                                    "type": "string",
                                                    "enum": ["keepalived", "ldirectord"],
                                                },
                                                "pid": {"type": "integer"},
                                                "block": {"type": "string"},
                                                "where": {"type": "string", "description": "file:line"},
                                                "keeps_failed": {"type": "boolean"},
                                                "weights": {
                                                    "type": "array",
                                                    "items": {
                                                        "type": "object",
                                                        "required": ["dest", "weight"],
                                                        "properties": {
                                                            "dest": _ref("DestKey"),
                                                            "weight": {"type": "integer"},
                                                        },
                                                    },
                                                },
                                            },
                                        },
                                    },
                                },
                            },
                        },
                        "unread": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Status": {
                    "type": "object",
                    "required": ["poll", "writes", "weight_managers", "warnings"],
                    "properties": {
                        "director": {"type": "string", "nullable": True},
                        "source": {"type": "string"},
                        "poll": {"type": "object"},
                        "writes": {"type": "object"},
                        "weight_managers": {"type": "array", "items": {"type": "object"}},
                        "health_act": {
                            "type": "object",
                            "description": "acting on health (--health.act): on or off, and the services "
                            "it leaves alone (keepalived or ldirectord manage them)",
                        },
                        "warnings": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    }
