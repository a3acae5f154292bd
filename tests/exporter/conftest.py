"""Fixtures of the exporter tests (helpers live in support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import Harness, start_exporter


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[Harness]:
    h = start_exporter(tmp_path, "--write.rate", "1000", "--write.burst", "1000")
    yield h
    h.running.stop()
