"""Fixtures of the dashboard tests: UTC, no cursor blink, staged demo directors, a flaky source."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from stage import Stage
from textual.widgets import Input

from lvstop.errors import SourceError
from lvstop.model import IssueKind, Snapshot
from lvstop.sources.sim import SimSource


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Event times print in local time: pin it."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(autouse=True)
def no_cursor_blink(monkeypatch: pytest.MonkeyPatch) -> None:
    """A blinking cursor makes screenshots depend on the moment they are taken (Harlequin's fixture)."""
    monkeypatch.setattr(Input, "_toggle_cursor", lambda self: None)


@pytest.fixture(autouse=True)
def keep_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    """Textual pops NO_COLOR from the environment: restore whatever the test started with."""
    if "NO_COLOR" in os.environ:
        monkeypatch.setenv("NO_COLOR", os.environ["NO_COLOR"])
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)


@pytest.fixture
def stage() -> Iterator[Stage]:
    s = Stage()
    yield s
    s.close()


class FlakySource(SimSource):
    """The demo director whose reads fail while `failing` is set (a director that went away)."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.failing: str | None = None

    def read(self) -> Snapshot:
        if self.failing is not None:
            raise SourceError(IssueKind.NO_PERMISSION, self.failing)
        return super().read()
