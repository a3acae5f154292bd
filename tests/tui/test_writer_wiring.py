"""writer_for: which write path the TUI gets for a source, and what it says when it has none."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeNetlink

from lvstop.errors import SourceError
from lvstop.model import AF_INET, DestKey, IssueKind, ServiceKey
from lvstop.poller import Poller
from lvstop.sources import factory
from lvstop.tui.app import writer_for
from lvstop.tui.writes import WriteOp, preview

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "listing" / "sample-6.1"
WEB = ServiceKey.tcp("192.0.2.1", 80)
DK = DestKey(AF_INET, "198.51.100.1", 80)


@pytest.mark.parametrize("op", [WriteOp("drain", WEB, DK, 3), WriteOp("set_weight", WEB, DK, 3, 5)])
def test_after_the_fallback_to_proc_an_edit_says_why_it_is_refused(
    netlink: type[FakeNetlink], proc_root: str, tmp_path: Path, op: WriteOp
) -> None:
    source = factory.open_source(proc_root=proc_root, warn=lambda _: None)
    poller = Poller(source)
    writer = writer_for(source, poller, str(tmp_path / "drains.json"), actor="t")  # as at startup
    assert writer is not None
    netlink.fail_read = SourceError(IssueKind.NO_PERMISSION, "netlink needs CAP_NET_ADMIN")
    poller.poll_once()
    assert source.name == "proc"
    shown = preview(op, writer, None)  # what d/u/w show
    assert shown.error == factory.READ_ONLY_MESSAGE and shown.result is None


def test_before_the_fallback_edits_go_through_netlink(
    netlink: type[FakeNetlink], proc_root: str, tmp_path: Path
) -> None:
    source = factory.open_source(proc_root=proc_root, warn=lambda _: None)
    writer = writer_for(source, Poller(source), str(tmp_path / "drains.json"), actor="t")
    assert writer is not None
    assert writer.set_weight(WEB, DK, 5, force=False, reason=None, dry_run=False).outcome == "applied"
    assert isinstance(source, factory.AutoSource) and isinstance(source.active, FakeNetlink)
    assert [d.weight for d in source.active.writes] == [5]
