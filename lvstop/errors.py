"""lvstop's own exceptions. Anything the kernel, a file or a user gives us that is wrong ends up here."""

from __future__ import annotations

from lvstop.model import IssueKind


class LvstopError(Exception):
    """Base of every error lvstop raises on purpose; the CLI prints its message on one line."""


class UsageError(LvstopError):
    """A bad command line, reported as one line and exit status 2 (here, not in cli, so that the TUI
    raises it without importing the cli that imports the TUI)."""


class ParseError(LvstopError):
    """Malformed text or bytes. `line` is 1-based where the input has lines."""

    def __init__(self, message: str, *, source: str = "", line: int | None = None) -> None:
        self.reason = message
        self.source = source
        self.line = line
        where = source + (f":{line}" if line is not None else "")
        super().__init__(f"{where}: {message}" if where else message)


class SourceError(LvstopError):
    """A source could not read at all (as opposed to an Issue, which marks a partial read)."""

    def __init__(self, kind: IssueKind, message: str) -> None:
        self.kind = kind
        super().__init__(message)


class ControlError(LvstopError):
    """A weight edit was refused or failed. `status` maps to HTTP (400, 404, 409, 500, 503)."""

    def __init__(self, message: str, *, status: int = 500) -> None:
        self.status = status
        super().__init__(message)
