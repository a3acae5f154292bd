"""Fixtures of the exporter tests (helpers live in support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import Harness, start_exporter


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[Harness]:
    h = start_exporter(tmp_path, "--write.rate", "1000", "--write.burst", "1000")
    # Polls on demand, but not by the clock: a slow machine must not slip a poll between two requests a
    # test compares; tests poll with h.poll() (test_cadence.py tests the clock).
    h.running.poller.interval = 1e9
    yield h
    h.running.stop()
