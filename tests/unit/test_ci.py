"""What CI relies on from the test setup itself."""

from __future__ import annotations

import pytest


def test_every_test_has_a_time_limit(pytestconfig: pytest.Config) -> None:
    # A wait loop whose condition never comes (`while ...: await pilot.pause()`) must fail, not hang CI.
    assert pytestconfig.pluginmanager.has_plugin("timeout")
    assert 0 < float(pytestconfig.getini("timeout")) <= 600
