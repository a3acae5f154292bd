"""net.ipv4.vs.est_cpulist (kernels 6.2+, issue 13): read as the CPU list it is, absent before 6.2, and
an empty list (the kernel stops estimating) said in the snapshot, JSON, exporter and director view."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from lvstop import codec
from lvstop.errors import ParseError
from lvstop.exporter.metrics import Health, Inputs, render_inputs
from lvstop.model import Issue, IssueKind, Snapshot
from lvstop.sources.procfs import (
    ESTIMATOR_STOPPED,
    ProcSource,
    estimator_issues,
    parse_cpulist,
    read_est_cpulist,
)
from lvstop.tui import viewmodel as vm


@pytest.mark.parametrize("text", ["0-1\n", "0\n", "0,2-3\n", "\n", ""])
def test_cpulists_the_kernel_prints_are_kept_as_printed(text: str) -> None:
    assert parse_cpulist(text) == text.strip()


@pytest.mark.parametrize("text", ["a", "0-", "1,,2", "-1", "0 1", "0-1,"])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ParseError, match="not a CPU list"):
        parse_cpulist(text)


def _vs_dir(tmp_path: Path, **files: str) -> str:
    d = tmp_path / "sys/net/ipv4/vs"
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)
    return str(d)


def test_read_absent_is_none_and_garbage_is_an_issue(tmp_path: Path) -> None:
    issues: list[Issue] = []
    assert read_est_cpulist(_vs_dir(tmp_path, run_estimation="1\n"), issues) is None  # 6.1
    assert issues == []
    assert read_est_cpulist(_vs_dir(tmp_path, est_cpulist="zero\n"), issues) is None
    assert [i.kind for i in issues] == [IssueKind.MALFORMED] and "est_cpulist" in issues[0].message


def test_empty_list_with_estimation_on_is_an_issue() -> None:
    assert estimator_issues({"run_estimation": 1}, "") == [Issue(IssueKind.UNAVAILABLE, ESTIMATOR_STOPPED)]
    assert estimator_issues({"run_estimation": 1}, "0-1") == []
    assert estimator_issues({"run_estimation": 1}, None) == []
    assert estimator_issues({"run_estimation": 0}, "") == []  # said by run_estimation itself


@pytest.mark.parametrize(("text", "want"), [(None, None), ("0-1\n", "0-1"), ("\n", "")])
def test_proc_source_reads_it(proc_root: str, text: str | None, want: str | None) -> None:
    files = {"run_estimation": "1\n", "est_nice": "0\n"} | ({} if text is None else {"est_cpulist": text})
    _vs_dir(Path(proc_root), **files)
    snap = ProcSource(root=proc_root, hz=250).read()
    assert snap.est_cpulist == want
    assert snap.sysctls["est_nice"] == 0
    stopped = [i for i in snap.issues if i.message == ESTIMATOR_STOPPED]
    assert len(stopped) == (want == "")


def _snap(cpulist: str | None) -> Snapshot:
    return Snapshot("netlink", "d1", 1.0, 1.0, sysctls={"run_estimation": 1}, est_cpulist=cpulist)


@pytest.mark.parametrize("cpulist", [None, "", "0-1"])
def test_json_round_trip(cpulist: str | None) -> None:
    s = _snap(cpulist)
    assert codec.snapshot_to_dict(s)["est_cpulist"] == cpulist
    assert codec.loads(codec.dumps(s)) == s


def test_json_refuses_a_bad_list_and_reads_old_recordings() -> None:
    d = codec.snapshot_to_dict(_snap("0-1"))
    with pytest.raises(ParseError, match="not a CPU list"):
        codec.snapshot_from_dict(d | {"est_cpulist": "all"})
    del d["est_cpulist"]  # written before 6.12 support
    assert codec.snapshot_from_dict(d).est_cpulist is None


def _page(cpulist: str | None) -> str:
    body = render_inputs(Inputs(_snap(cpulist), Health("netlink", True, 0.0, 0.0)))
    return gzip.decompress(body.gzip).decode()


def test_exporter_info_series() -> None:
    assert 'lvstop_ipvs_estimator_cpulist_info{cpulist="0-1"} 1' in _page("0-1")
    assert 'lvstop_ipvs_estimator_cpulist_info{cpulist=""} 1' in _page("")
    assert "lvstop_ipvs_estimator_cpulist_info" not in _page(None)  # before 6.2: absent, never a default


def test_director_view_says_what_it_means() -> None:
    rows = {s.name: s for s in vm.director_settings(_snap("0-1"))}
    assert rows["est_cpulist"].value == "0-1" and "CPUs 0-1" in rows["est_cpulist"].meaning
    assert "every 2 s" in rows["run_estimation"].meaning
    rows = {s.name: s for s in vm.director_settings(_snap(""))}
    assert rows["est_cpulist"].value == "(empty)" and rows["est_cpulist"].tone == vm.WARN
    for name in ("est_cpulist", "run_estimation"):  # the switch reads 1, but nothing estimates
        assert rows[name].meaning == ESTIMATOR_STOPPED
    assert "est_cpulist" not in {s.name for s in vm.director_settings(_snap(None))}
