"""lvstop.gcpolicy: builds pause the collector; managed processes freeze after builds and collect at times."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from lvstop import gcpolicy


class Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def collector_off() -> Iterator[None]:
    """No automatic collection may take the garbage before the pacer's; nothing stays frozen after."""
    enabled = gc.isenabled()
    gc.disable()
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()


def test_paused_restores_what_it_found_also_nested_and_on_errors() -> None:
    assert gc.isenabled()
    with gcpolicy.paused():
        assert not gc.isenabled()
        with gcpolicy.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner one found it off
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gcpolicy.paused():
        raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()  # an application that runs the collector itself keeps it off
    try:
        with gcpolicy.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_unmanaged_process_freezes_nothing(collector_off: None) -> None:
    pacer = gcpolicy.Pacer()
    pacer.after_build()
    assert gc.get_freeze_count() == 0


def test_a_managed_process_freezes_after_builds_and_collects_fully_now_and_then(collector_off: None) -> None:
    now = [0.0]
    pacer = gcpolicy.Pacer(clock=lambda: now[0], full_every=600.0)
    pacer.manage()
    garbage = Cycle()
    gone = weakref.ref(garbage)
    del garbage  # cyclic garbage: refcounting cannot free it
    pacer.after_build()
    assert gc.get_freeze_count() > 0 and gone() is not None  # frozen with the rest: not collected
    now[0] = 601.0
    pacer.after_build()  # due: unfreeze, collect everything, freeze again
    assert gone() is None and gc.get_freeze_count() > 0
    pacer.release()
    assert gc.get_freeze_count() == 0 and not pacer.managed


def test_in_a_managed_process_the_outermost_pause_freezes_before_the_collector_resumes(
    collector_off: None,
) -> None:
    gc.enable()
    gcpolicy.manage()
    try:
        with gcpolicy.paused():
            built = [{"dest": i} for i in range(5000)]
            with gcpolicy.paused():  # a nested build (another thread's, or a read inside a poll)
                pass
            assert gc.get_freeze_count() == 0 and not gc.isenabled()  # only the outermost freezes
        assert gc.isenabled() and gc.get_freeze_count() >= len(built)
        assert gc.get_count()[0] < 100  # nothing young left for the collector to walk at once
    finally:
        gcpolicy.release()
