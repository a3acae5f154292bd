"""POST /api/v1/preview: what a drain dialog shows before it asks, not an attempt (issue 11 item 17)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stage import settle

from lvstop.model import ServiceKey
from lvstop.poller import Poller
from lvstop.sources.remote import RemoteSource
from lvstop.tui.app import make_app, writer_for
from lvstop.tui.widgets.director_view import DirectorView
from lvstop.tui.widgets.live_table import LiveTable
from lvstop.tui.writes import RemoteWriter, WriteOp, preview

from .support import WEB, Harness, basic, dest_json, dkey, key_json, start_exporter
from .test_api import web_config

DRAIN = {"action": "drain", "service": key_json(), "dest": dest_json()}


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Harness]:
    # One write a minute after the first: a preview that spent the budget would make the drain a 429.
    h = start_exporter(
        tmp_path,
        "--web.config.file",
        str(web_config(tmp_path)),
        "--write.rate",
        "0.016",
        "--write.burst",
        "1",
    )
    yield h
    h.running.stop()


def url(h: Harness, user: str) -> str:
    assert h.write_url is not None
    return h.write_url.replace("://", f"://{user}:{user}-pw@")


def edits(h: Harness) -> dict[str, int]:
    return dict(h.running.exporter.edits)


def last_live(h: Harness) -> tuple[ServiceKey, list[Any]]:
    """A fwmark service of the demo and its dests: draining the last one takes its last live weight."""
    svc = next(s for s in h.poll().services if s.key.is_fwmark and len(s.dests) >= 2)
    return svc.key, list(svc.dests)


def test_opening_a_drain_dialog_writes_no_audit_line_and_spends_no_budget(secured: Harness) -> None:
    writer = RemoteWriter(url(secured, "bob"))
    op = WriteOp("drain", WEB, dkey(), 100)
    counted = edits(secured)
    for _ in range(3):  # the dialog opened three times
        shown = preview(op, writer, None)
        assert shown.error is None and shown.refused is None and shown.result is not None
        assert (shown.result.outcome, shown.result.old, shown.result.previous) == ("dry_run", 100, 100)
    assert secured.audit() == [] and edits(secured) == counted
    assert secured.source.get_dest(WEB, dkey()).weight == 100  # type: ignore[union-attr]
    done = op.call(writer, dry_run=False)  # the budget's one write is still there
    assert done.outcome == "applied" and done.verified == 0
    [line] = secured.audit()
    assert (line["action"], line["outcome"], line["actor"]) == ("drain", "applied", "bob")


def test_a_guard_refusal_is_shown_as_forcible_to_an_admin_and_as_an_error_to_an_operator(
    secured: Harness,
) -> None:
    skey, dests = last_live(secured)
    admin, operator = RemoteWriter(url(secured, "carol")), RemoteWriter(url(secured, "bob"))
    for d in dests[:-1]:
        secured.source.set_dest(skey, dataclasses.replace(d, weight=0))
    secured.poll()
    last = WriteOp("drain", skey, dests[-1].key, dests[-1].weight)
    for_admin = preview(last, admin, None)
    assert for_admin.refused is not None and "last live weight" in for_admin.refused
    assert for_admin.result is not None and for_admin.result.outcome == "dry_run" and for_admin.error is None
    for_operator = preview(last, operator, None)
    assert for_operator.result is None and for_operator.error is not None
    assert "last live weight" in for_operator.error
    gone = preview(
        WriteOp("restore", WEB, dkey(), 100), admin, None
    )  # never drained: an error, forced or not
    assert gone.result is None and gone.error is not None and "not drained by lvstop" in gone.error
    assert secured.audit() == []


def test_a_preview_is_checked_like_a_write_but_never_audited(secured: Harness) -> None:
    bob = {"Authorization": basic("bob", "bob-pw")}
    refusals = [
        (secured.request("GET", "/api/v1/preview", headers=bob), 405),
        (secured.post("/api/v1/preview", DRAIN, headers=bob, write=False), 403),  # the read listener
        (secured.post("/api/v1/preview", DRAIN, headers={**bob, "X-Lvstop-Request": ""}), 403),
        (secured.post("/api/v1/preview", DRAIN), 401),
        (secured.post("/api/v1/preview", DRAIN, headers={"Authorization": basic("alice", "alice-pw")}), 403),
        (secured.post("/api/v1/preview", {**DRAIN, "action": "ramp"}, headers=bob), 400),
        (secured.post("/api/v1/preview", {**DRAIN, "action": "set_weight"}, headers=bob), 400),  # no weight
        (secured.post("/api/v1/preview", {**DRAIN, "dry_run": False}, headers=bob), 400),  # unknown field
    ]
    for reply, status in refusals:
        assert reply.status == status, (reply.status, reply.body)
    assert "may only read" in refusals[4][0].json()["error"]
    ok = secured.post("/api/v1/preview", {**DRAIN, "action": "set_weight", "weight": 7}, headers=bob)
    assert ok.status == 200 and ok.json()["result"]["requested"] == 7
    assert secured.audit() == [] and secured.source.get_dest(WEB, dkey()).weight == 100  # type: ignore[union-attr]


async def test_the_tuis_drain_dialog_on_a_remote_director_audits_only_the_drain(secured: Harness) -> None:
    u = url(secured, "bob")
    poller = Poller(RemoteSource(u))
    app = make_app(
        [poller],
        writers=[writer_for(poller.source, poller, "", url=u)],
        autostart=False,
        resolver=lambda _a: None,
    )
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(2):
            poller.poll_once()
            await settle(app, pilot)
        view = app.query_one("#director-0", DirectorView)
        view.query_one("#services-table", LiveTable).select_key(str(WEB))
        await pilot.press("enter")
        await settle(app, pilot)
        view.query_one("#dests-table", LiveTable).select_key(str(dkey()))
        await pilot.press("d")
        deadline = time.monotonic() + 10
        while type(app.screen).__name__ != "ConfirmScreen":
            assert time.monotonic() < deadline, "the drain dialog never opened"
            await pilot.pause(0.02)
        assert secured.audit() == []  # the dialog is open, its preview shown: nothing attempted
        await pilot.press("y")
        while secured.source.get_dest(WEB, dkey()).weight != 0:  # type: ignore[union-attr]
            assert time.monotonic() < deadline + 10, "the drain never arrived"
            await pilot.pause(0.05)
    [line] = secured.audit()
    assert (line["action"], line["outcome"], line["actor"]) == ("drain", "applied", "bob")
