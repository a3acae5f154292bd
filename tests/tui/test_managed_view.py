"""Issue 14: the dashboard says which services keepalived or ldirectord manage, and by whom: a Managed
by column in the services view, the block and how it undoes an edit above the service's dests, and
the drain dialog's warning (Control's own, from the same configuration)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from stage import Stage, play, settle

from lvstop.control import WeightManagers
from lvstop.errors import ParseError
from lvstop.managers import ManagedLookup, by_service, claims, managed_from_dict, managed_to_dict
from lvstop.model import ServiceKey
from lvstop.tui import viewmodel as vm
from lvstop.tui.screens.confirm import ConfirmScreen, describe
from lvstop.tui.widgets.live_table import LiveTable
from lvstop.tui.widgets.spans import SpanLines

from .test_health_view import cells
from .test_viewmodel import WEB, dest, service, snapshot

HTTPS = ServiceKey.tcp("203.0.113.10", 443)
KEEPALIVED = """\
virtual_server 203.0.113.10 443 {
    protocol TCP
    real_server 192.0.2.11 8443 {
        weight 100
    }
}
"""


def fake_proc(root: Path, config: str = KEEPALIVED) -> Path:
    """A /proc where keepalived (pid 40) runs with its default configuration under its own root."""
    proc = root / "proc"
    (proc / "40/root/etc/keepalived").mkdir(parents=True, exist_ok=True)
    (proc / "40/comm").write_text("keepalived\n")
    (proc / "40/cmdline").write_bytes(b"keepalived\0")
    (proc / "40/root/etc/keepalived/keepalived.conf").write_text(config)
    return proc


class TestViewModel:
    def owned(self, tmp_path: Path) -> vm.ManagedMap:
        proc = fake_proc(tmp_path, KEEPALIVED.replace("203.0.113.10 443", "203.0.113.10 80"))
        owned, _ = by_service(claims((("keepalived", 40),), str(proc)))
        return owned

    def test_a_managed_by_column_only_when_a_service_is_managed(self, tmp_path: Path) -> None:
        snap = snapshot(service(WEB, dest(1)), service(HTTPS, dest(2)))
        plain = vm.services_table(snap, vm.ViewSettings(), vm.History(), managed={})
        assert plain.columns == vm.SERVICE_COLUMNS
        model = vm.services_table(snap, vm.ViewSettings(), vm.History(), managed=self.owned(tmp_path))
        ids = [c.id for c in model.columns]
        assert ids[ids.index("dests") + 1] == "managed"
        assert cells(model, "managed") == {str(WEB): "keepalived", str(HTTPS): ""}
        filtered = vm.services_table(
            snap, vm.ViewSettings(services_filter="keepalived"), vm.History(), managed=self.owned(tmp_path)
        )
        assert [r.key for r in filtered.rows] == [str(WEB)]

    def test_health_then_managed_after_live(self, tmp_path: Path) -> None:
        snap = snapshot(service(WEB, dest(1)))
        model = vm.services_table(
            snap, vm.ViewSettings(), vm.History(), health={}, managed=self.owned(tmp_path)
        )
        ids = [c.id for c in model.columns]
        assert ids[ids.index("dests") + 1 : ids.index("dests") + 3] == ["health", "managed"]

    def test_notes_name_the_block_and_the_undo(self, tmp_path: Path) -> None:
        snap = snapshot(service(WEB, dest(1)))
        notes = vm.dest_notes(
            snap,
            snap.services[0],
            {},
            vm.History(),
            managed=self.owned(tmp_path)[WEB],
            unread=("x (pid 9) ...",),
        )
        text = ["".join(t for t, _ in n) for n in notes]
        assert text == [
            "managed by keepalived (pid 40, virtual_server 203.0.113.10 80, "
            "/etc/keepalived/keepalived.conf:1): keepalived puts its configured weight back on a reload "
            "or restart, and removes a failing server and adds it back at its configured weight when it "
            "recovers",
            "x (pid 9) ...: it may manage this service",
        ]


class TestLookup:
    def test_configurations_reread_when_the_managers_change_or_after_a_while(self, tmp_path: Path) -> None:
        proc = fake_proc(tmp_path)
        now = [0.0]
        lookup = ManagedLookup(running=WeightManagers(str(proc), ttl=0.0), clock=lambda: now[0])
        assert list(lookup()[0]) == [HTTPS]
        conf = proc / "40/root/etc/keepalived/keepalived.conf"
        conf.write_text(KEEPALIVED.replace("443", "80"))  # a reload: same pid, new configuration
        assert list(lookup()[0]) == [HTTPS]  # read again only after a while...
        now[0] = 31.0
        assert list(lookup()[0]) == [WEB]
        (proc / "40/comm").write_text("bash\n")  # ...or at once when keepalived goes
        assert lookup() == ({}, ())

    def test_claims_cross_the_api_unchanged(self, tmp_path: Path) -> None:
        """/api/v1/managed (lvstop --connect): the remote dashboard rebuilds what the exporter read."""
        proc = fake_proc(tmp_path, KEEPALIVED.replace("protocol TCP", "protocol TCP\n    inhibit_on_failure"))
        owned, _ = ManagedLookup(running=WeightManagers(str(proc)))()
        assert owned[HTTPS][0][1].keeps_failed and owned[HTTPS][0][1].weights
        assert managed_from_dict(managed_to_dict(owned, ("x (pid 9) ...",))) == (owned, ("x (pid 9) ...",))

    @pytest.mark.parametrize(
        ("where", "value", "says"),
        [
            ("pid", "forty", "services[0].managers[0].pid: expected an integer, got the string 'forty'"),
            ("keeps_failed", "false", "services[0].managers[0].keeps_failed: expected true or false"),
            ("weights", [{"dest": {"address": "192.0.2.1", "port": 80}, "weight": 1.5}], "weights[0].weight"),
            ("weights", [{"dest": {"address": "192.0.2.1", "port": 70000}, "weight": 1}], "dest.port"),
            ("manager", None, "services[0].managers[0].manager: expected a string, got null"),
        ],
    )
    def test_a_bad_claim_is_refused_naming_its_field(
        self, tmp_path: Path, where: str, value: object, says: str
    ) -> None:
        """A remote exporter's /api/v1/managed is input: a wrong type is refused, never coerced
        (bool("false") would claim keeps_failed)."""
        owned, _ = ManagedLookup(running=WeightManagers(str(fake_proc(tmp_path))))()
        bad = managed_to_dict(owned, ())
        bad["services"][0]["managers"][0][where] = value
        with pytest.raises(ParseError, match=re.escape(says)):
            managed_from_dict(bad)

    def test_a_bad_unread_line_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ParseError, match=re.escape("unread[1]: expected a string, got the number 3")):
            managed_from_dict({"services": [], "unread": ["x", 3]})


class TestDashboard:
    async def test_services_marker_notes_and_the_drain_dialog(self, tmp_path: Path) -> None:
        proc = fake_proc(tmp_path)
        stage = Stage()
        assert stage.writer is not None
        stage.writer.control.managers = WeightManagers(str(proc))  # type: ignore[attr-defined]
        app = stage.app(managed=ManagedLookup(running=WeightManagers(str(proc))))
        try:
            async with app.run_test(size=(160, 40)) as pilot:
                await play(app, pilot, stage, 3)
                services = app.query_one("#services-table", LiveTable)
                assert cells(services.model, "managed")[str(HTTPS)] == "keepalived"
                assert cells(services.model, "managed")[str(WEB)] == ""
                services.select_key(str(HTTPS))
                await pilot.press("enter")
                await settle(app, pilot)
                notes = app.query_one("#dest-notes", SpanLines).plain
                assert notes.startswith(
                    "managed by keepalived (pid 40, virtual_server 203.0.113.10 443, "
                    "/etc/keepalived/keepalived.conf:1): keepalived puts its configured weight back"
                )
                app.query_one("#dests-table", LiveTable).select_key("192.0.2.11:8443")
                await pilot.press("d")
                while not isinstance(app.screen, ConfirmScreen):
                    await pilot.pause(0.02)
                text = describe(app.screen.preview).plain
                assert (
                    "keepalived (pid 40) manages TCP 203.0.113.10:443 (virtual_server 203.0.113.10 443, "
                    "/etc/keepalived/keepalived.conf:1): keepalived puts weight 100 back" in text
                )
        finally:
            stage.close()

    async def test_the_demo_looks_for_nobody(self, stage: Stage) -> None:
        app = stage.app()
        async with app.run_test(size=(160, 40)) as pilot:
            await play(app, pilot, stage, 2)
            assert "managed" not in [c.id for c in app.query_one("#services-table", LiveTable).model.columns]
