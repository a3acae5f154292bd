"""keepalived's and ldirectord's configurations: which services they manage and how they undo an edit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fakes import Replies

from lvstop.errors import ParseError
from lvstop.managers import (
    KEEPALIVED_CONF,
    LDIRECTORD_CONF,
    ManagedService,
    by_service,
    claims,
    config_path,
    edit_warnings,
    managed_from_dict,
    managed_services,
    managed_to_dict,
    parse_keepalived,
    parse_ldirectord,
)
from lvstop.model import AF_INET, AF_INET6, DestKey, Protocol, ServiceKey
from lvstop.sources.remote import RemoteManaged

FIXTURES = Path(__file__).parent.parent / "fixtures" / "managers"
DK = DestKey(AF_INET, "192.0.2.11", 80)


def _read(p: str) -> str:
    return Path(p).read_text()


def _by_key(items: list) -> dict:  # type: ignore[type-arg]
    return {m.key: m for m in items}


def test_keepalived_services_groups_includes_and_fwmarks() -> None:
    got = _by_key(parse_keepalived(str(FIXTURES / "keepalived/keepalived.conf"), _read))
    web = got[ServiceKey.tcp("203.0.113.10", 80)]
    assert web.block == "virtual_server 203.0.113.10 80" and web.where.endswith("keepalived.conf:14")
    assert dict(web.weights) == {
        DestKey(AF_INET, "192.0.2.11", 8080): 3,
        DestKey(AF_INET, "192.0.2.12", 8080): 2,
    }
    assert web.keeps_failed  # one real server has inhibit_on_failure
    # virtual_server_group: an address range, an IPv6 member, a fwmark
    group = {k for k, m in got.items() if m.block == "virtual_server group web-group"}
    assert group == {
        ServiceKey.tcp("203.0.113.20", 80),
        ServiceKey.tcp("203.0.113.21", 80),
        ServiceKey.tcp("203.0.113.22", 80),
        ServiceKey.tcp("2001:db8:113::20", 80),
        ServiceKey.mark(9),
    }
    assert not got[ServiceKey.mark(9)].keeps_failed
    # from conf.d/*.conf: UDP with a sorry server (default weight 1), an IPv6 fwmark service
    dns = got[ServiceKey.udp("203.0.113.53", 53)]
    assert dns.where == f"{FIXTURES}/keepalived/conf.d/dns.conf:1"
    assert dict(dns.weights) == {
        DestKey(AF_INET, "192.0.2.200", 53): 1,
        DestKey(AF_INET, "192.0.2.11", 53): 1,
    }
    assert dict(got[ServiceKey.mark(7, AF_INET6)].weights) == {DestKey(AF_INET6, "2001:db8:2::11", 0): 5}
    assert len(got) == 8


def test_undo_says_how_the_manager_puts_its_weight_back() -> None:
    got = _by_key(parse_keepalived(str(FIXTURES / "keepalived/keepalived.conf"), _read))
    web = got[ServiceKey.tcp("203.0.113.10", 80)]
    text = web.undo(DestKey(AF_INET, "192.0.2.11", 8080))
    assert "weight 3 back on a reload or restart" in text and "weight 0" in text
    assert "removes a failing server" in got[ServiceKey.mark(9)].undo()


def test_ldirectord_blocks() -> None:
    got = _by_key(parse_ldirectord(str(FIXTURES / "ldirectord.cf"), _read))
    web = got[ServiceKey.tcp("203.0.113.30", 80)]  # port name from the services database
    assert web.block == "virtual=203.0.113.30:http" and web.keeps_failed  # quiescent=yes in the block
    assert dict(web.weights) == {DestKey(AF_INET, "192.0.2.11", 80): 4, DestKey(AF_INET, "192.0.2.12", 80): 1}
    v6 = got[ServiceKey.tcp("2001:db8:113::30", 443)]
    assert not v6.keeps_failed  # the file's quiescent=no
    assert dict(v6.weights) == {DestKey(AF_INET6, "2001:db8:2::12", 443): 2}
    assert ServiceKey.mark(12) in got
    assert got[ServiceKey.mark(12)].manager == "ldirectord"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("virtual_server 203.0.113.10 80 {\n  real_server 192.0.2.1 80 {\n", None, "not closed"),
        ("}\n", 1, "closes no block"),
        ("virtual_server 203.0.113.300 80 {\n}\n", 1, "not an IP address"),
        ("virtual_server 203.0.113.1 99999 {\n}\n", 1, "not a port"),
        ("virtual_server group nope {\n}\n", 1, "no virtual_server_group"),
        ("virtual_server 203.0.113.1 80 {\n protocol ICMP\n}\n", 1, "unknown protocol"),
        ("virtual_server_group g {\n 203.0.113.9-3 80\n}\nvirtual_server group g {\n}\n", 2, "backwards"),
        ("include self.conf\n", 1, "nested too deep"),
    ],
)
def test_keepalived_errors_name_file_and_line(
    tmp_path: Path, text: str, line: int | None, words: str
) -> None:
    conf = tmp_path / "self.conf"
    conf.write_text(text)
    with pytest.raises(ParseError, match=words) as e:
        parse_keepalived(str(conf), _read)
    assert e.value.source == str(conf) and e.value.line == line


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("\treal=192.0.2.1:80\n", 1, "follows no virtual"),
        ("virtual=203.0.113.1\n", 1, "address:port"),
        ("virtual=203.0.113.1:nosuchport\n", 1, "unknown port"),
        ("checktimeout\n", 1, "name=value"),
    ],
)
def test_ldirectord_errors(tmp_path: Path, text: str, line: int, words: str) -> None:
    conf = tmp_path / "ldirectord.cf"
    conf.write_text(text)
    with pytest.raises(ParseError, match=words) as e:
        parse_ldirectord(str(conf), _read)
    assert e.value.line == line


@pytest.mark.parametrize(
    ("name", "cmdline", "want"),
    [
        ("keepalived", ["/usr/sbin/keepalived", "--dont-fork", "-C"], KEEPALIVED_CONF),
        ("keepalived", ["keepalived", "-f", "/srv/k.conf", "-C"], "/srv/k.conf"),
        ("keepalived", ["keepalived", "--use-file=/srv/k.conf"], "/srv/k.conf"),
        ("ldirectord", ["/usr/bin/perl", "-w", "/usr/sbin/ldirectord", "start"], LDIRECTORD_CONF),
        ("ldirectord", ["/usr/bin/perl", "/usr/sbin/ldirectord", "web.cf", "start"], "/etc/ha.d/web.cf"),
        ("ldirectord", ["/usr/bin/perl", "/usr/sbin/ldirectord", "/srv/l.cf", "start"], "/srv/l.cf"),
    ],
)
def test_config_path_from_the_command_line(name: str, cmdline: list[str], want: str) -> None:
    assert config_path(name, cmdline) == want


def test_a_running_manager_is_read_inside_its_own_root(tmp_path: Path) -> None:
    """/proc/PID/root is the manager's mount namespace: its config path is read under it."""
    proc = tmp_path / "proc"
    pid = proc / "4242"
    (pid / "root/srv/conf.d").mkdir(parents=True)
    (pid / "cmdline").write_bytes(b"keepalived\0-f\0/srv/k.conf\0")
    (pid / "root/srv/k.conf").write_text("include conf.d/*.conf\n")
    (pid / "root/srv/conf.d/a.conf").write_text("virtual_server 203.0.113.9 443 {\n protocol SCTP\n}\n")
    got = managed_services("keepalived", 4242, str(proc))
    assert [(m.key, m.where) for m in got] == [
        (ServiceKey(AF_INET, Protocol.SCTP, "203.0.113.9", 443), "/srv/conf.d/a.conf:1")
    ]
    assert os.path.exists(pid / "root/srv/k.conf")


def test_edit_warnings_unreadable_config_still_warns(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "55").mkdir(parents=True)
    (proc / "55" / "cmdline").write_bytes(b"keepalived\0")  # its default config is missing under its root
    (warning,) = edit_warnings((("keepalived", 55),), ServiceKey.tcp("203.0.113.10", 80), DK, str(proc))
    assert warning.startswith("keepalived (pid 55) is running and its configuration could not be read")
    assert edit_warnings((), ServiceKey.tcp("203.0.113.10", 80), DK, str(proc)) == ()


def test_edit_warnings_only_from_managers_of_the_edited_namespace(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    other_ns = tmp_path / "other-netns"
    other_ns.write_text("")
    (proc / "self/ns").mkdir(parents=True)
    (proc / "self/ns/net").symlink_to("/proc/self/ns/net")
    for pid, ns in ((10, "/proc/self/ns/net"), (20, str(other_ns))):
        (proc / f"{pid}/ns").mkdir(parents=True)
        (proc / f"{pid}/ns/net").symlink_to(ns)
        (proc / f"{pid}/cmdline").write_bytes(b"keepalived\0")  # no config under its root: warns it may
    running = (("keepalived", 10), ("keepalived", 20))
    key = ServiceKey.tcp("203.0.113.10", 80)
    assert [w.split(" is running")[0] for w in edit_warnings(running, key, DK, str(proc))] == [
        "keepalived (pid 10)"
    ]
    assert [w.split(" is running")[0] for w in edit_warnings(running, key, DK, str(proc), str(other_ns))] == [
        "keepalived (pid 20)"
    ]


def test_a_checker_child_does_not_warn_twice(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    for pid, ppid in ((30, 1), (31, 30)):  # keepalived and the checker process it forked
        (proc / str(pid)).mkdir(parents=True)
        (proc / f"{pid}/cmdline").write_bytes(b"keepalived\0")
        (proc / f"{pid}/stat").write_text(f"{pid} (keepalived) S {ppid} {pid} {pid} 0 -1\n")
    got = edit_warnings(
        (("keepalived", 30), ("keepalived", 31)), ServiceKey.tcp("203.0.113.10", 80), DK, str(proc)
    )
    assert len(got) == 1 and got[0].startswith("keepalived (pid 30)")


def test_by_service_names_each_services_managers(tmp_path: Path) -> None:
    """What `lvstop list --json` and the TUI show: per service, who manages it and in which block."""
    proc = tmp_path / "proc"
    (proc / "40/root/etc/keepalived").mkdir(parents=True)
    (proc / "40/cmdline").write_bytes(b"keepalived\0")
    (proc / "40/root/etc/keepalived/keepalived.conf").write_text(
        "virtual_server 203.0.113.10 80 {\n real_server 192.0.2.1 80 {\n  weight 5\n }\n}\n"
    )
    (proc / "41").mkdir()
    (proc / "41/cmdline").write_bytes(b"ldirectord\0")  # no ldirectord.cf under its root
    owned, unread = by_service(claims((("keepalived", 40), ("ldirectord", 41)), str(proc)))
    ((pid, m),) = owned[ServiceKey.tcp("203.0.113.10", 80)]
    assert (pid, m.manager, m.block, m.where) == (
        40,
        "keepalived",
        "virtual_server 203.0.113.10 80",
        "/etc/keepalived/keepalived.conf:1",
    )
    assert list(owned) == [ServiceKey.tcp("203.0.113.10", 80)]
    assert len(unread) == 1 and unread[0].startswith("ldirectord (pid 41) is running and its configuration")


def test_a_bad_managed_reply_keeps_the_last_answer_and_says_where() -> None:
    web = ServiceKey(AF_INET, Protocol.TCP, "203.0.113.10", 80)
    owned = {web: ((40, ManagedService("keepalived", web, "virtual_server", "k.conf:3")),)}
    good, bad = managed_to_dict(owned, ()), managed_to_dict(owned, ())
    assert managed_from_dict(good) == (owned, ())
    bad["services"][0]["managers"][0]["keeps_failed"] = "no"
    now = [0.0]
    remote = RemoteManaged(Replies("/api/v1/managed", good, bad), clock=lambda: now[0])  # type: ignore[arg-type]
    remote.update()
    first = remote()
    assert list(first[0]) == [web] and remote.error is None
    now[0] = 1000.0
    remote.update()
    assert remote() is first
    assert remote.error == (
        "http://192.0.2.1:9736/api/v1/managed: unexpected reply: "
        "services[0].managers[0].keeps_failed: expected true or false, got the string 'no'"
    )
