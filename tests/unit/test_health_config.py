"""The health-check YAML: what it accepts, its defaults, one line naming file, line and key per refusal."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from lvstop.health.config import (
    DEFAULT_FALL,
    DEFAULT_RISE,
    DestMatch,
    HealthConfigError,
    load,
    parse,
    parse_service,
)
from lvstop.model import AF_INET, AF_INET6, Protocol, ServiceKey

GOOD = """\
checks:
  - service: "TCP 203.0.113.10:443"
    dest: 192.0.2.11
    type: https
    path: /healthz
    host: www.example.org
    expect_status: [200, 204, "300-302"]
    expect_body: ok
    tls_verify: false
    interval: 2s
    timeout: 500ms
    fall: 2
    rise: 1
    jitter: 0
  - service: "*"
    type: tcp
  - service: FWM 1
    type: agent
    port: 7777
    send: "ping\\n"
  - service: "UDP [2001:db8::53]:53"
    dest: "[2001:db8::1]:53"
    type: dns
    query: example.org.
    qtype: aaaa
    expect: ["2001:db8::10"]
  - service: "*"
    type: exec
    command: /usr/local/bin/check --mode "deep check"
    interval: 1m
"""


def test_a_good_file_parses_with_its_values_and_defaults() -> None:
    cfg = parse(GOOD, "h.yaml")
    https, tcp, agent, dns, exe = cfg.checks
    assert https.service == ServiceKey.tcp("203.0.113.10", 443)
    assert https.dest == DestMatch(AF_INET, "192.0.2.11", 0)
    assert (https.interval, https.timeout, https.fall, https.rise, https.jitter) == (2.0, 0.5, 2, 1, 0.0)
    assert https.expect_status == frozenset({200, 204, 300, 301, 302})
    assert (https.path, https.host, https.expect_body, https.tls_verify) == (
        "/healthz",
        "www.example.org",
        "ok",
        False,
    )
    assert https.line == 2 and tcp.line == 15
    assert tcp.service is None
    assert (tcp.fall, tcp.rise, tcp.interval, tcp.jitter) == (DEFAULT_FALL, DEFAULT_RISE, 5.0, 0.5)
    assert (DEFAULT_FALL, DEFAULT_RISE) == (3, 2)
    assert agent.service == ServiceKey.mark(1) and agent.port == 7777 and agent.send == "ping\n"
    assert dns.service == ServiceKey(AF_INET6, Protocol.UDP, "2001:db8::53", 53)
    assert dns.dest == DestMatch(AF_INET6, "2001:db8::1", 53)
    assert (dns.query, dns.qtype, dns.expect) == ("example.org", "AAAA", ("2001:db8::10",))
    assert exe.command == ("/usr/local/bin/check", "--mode", "deep check")
    assert exe.interval == 60.0
    assert https.label == "https" and tcp.expect_status == frozenset(range(200, 400))


def test_services_in_ipvsadm_syntax() -> None:
    assert parse_service("SCTP 203.0.113.16:3868") == ServiceKey(AF_INET, Protocol.SCTP, "203.0.113.16", 3868)
    assert parse_service("FWM 2 IPv6") == ServiceKey.mark(2, AF_INET6)
    assert parse_service("udp 203.0.113.10:53") == ServiceKey.udp("203.0.113.10", 53)


def _refusal(body: str) -> HealthConfigError:
    with pytest.raises(HealthConfigError) as info:
        parse(textwrap.dedent(body), "h.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("health config h.yaml:")
    return info.value


@pytest.mark.parametrize(
    ("body", "line", "key", "says"),
    [
        ("checks:\n  - service: '*'\n    type: tcp\n    pth: /x\n", 4, "pth", "unknown key for a tcp check"),
        ("checks:\n  - service: '*'\n    type: tcpx\n", 3, "type", "unknown type 'tcpx'"),
        ("checks:\n  - service: '*'\n    type: tcp\n    path: /\n", 4, "path", "unknown key"),
        ("checks:\n  - service: '*'\n    type: tcp\n    interval: 2 parsecs\n", 4, "interval", "duration"),
        ("checks:\n  - service: '*'\n    type: tcp\n    interval: 0s\n", 4, "interval", "above 0"),
        ("checks:\n  - service: '*'\n    type: tcp\n    port: yes\n", 4, "port", "whole number"),
        ("checks:\n  - service: '*'\n    type: tcp\n    port: 70000\n", 4, "port", "1 to 65535"),
        ("checks:\n  - service: '*'\n    type: tcp\n    fall: 0\n", 4, "fall", "1 to 100"),
        (
            "checks:\n  - service: '*'\n\n    type: tcp\n    jitter: 9s\n",
            5,
            "jitter",
            "shorter than the interval",
        ),
        ("checks:\n  - service: TCP 203.0.113.1\n    type: tcp\n", 2, "service", "has no port"),
        ("checks:\n  - service: FWM 0\n    type: tcp\n", 2, "service", "fwmark"),
        ("checks:\n  - service: www.example.org:80\n    type: tcp\n", 2, "service", "expected"),
        ("checks:\n  - type: tcp\n", 2, "service", "missing"),
        ("checks:\n  - service: '*'\n", 2, "type", "missing"),
        (
            "checks:\n  - service: '*'\n    type: http\n    expect_status: 700\n",
            4,
            "expect_status",
            "100 to 599",
        ),
        ("checks:\n  - service: '*'\n    type: http\n    method: POST\n", 4, "method", "GET or HEAD"),
        ("checks:\n  - service: '*'\n    type: http\n    path: healthz\n", 4, "path", "start with '/'"),
        (
            "checks:\n  - service: '*'\n    type: http\n    expect_body_regex: '('\n",
            4,
            "expect_body_regex",
            "regular",
        ),
        ("checks:\n  - service: '*'\n    type: agent\n", 2, "port", "agent's port"),
        ("checks:\n  - service: '*'\n    type: dns\n", 2, "query", "name to query"),
        ("checks:\n  - service: '*'\n    type: dns\n    query: a..b\n", 4, "query", "domain name"),
        ("checks:\n  - service: '*'\n    type: dns\n    query: a\n    qtype: ANY\n", 5, "qtype", "one of"),
        ("checks:\n  - service: '*'\n    type: exec\n    command: ''\n", 4, "command", "empty"),
        ("checks:\n  - service: '*'\n    type: tcp\n    source: eth0\n", 4, "source", "not an IP"),
        ("checks:\n  - service: '*'\n    type: tcp\n    type: http\n", 4, "type", "given twice"),
        ("checks:\n  - service: '*'\n    type: tcp\n    dest: [1, 2]\n", 4, "dest", "single value"),
        (
            "checks:\n  - service: '*'\n    type: https\n    tls_verify: nope\n",
            4,
            "tls_verify",
            "true or false",
        ),
        ("checks: []\n", 1, "checks", "non-empty list"),
        ("check:\n  - {}\n", 1, "check", "unknown key"),
        ("checks:\n  - just a string\n", 2, "checks", "mapping"),
    ],
)
def test_refusals_name_the_line_and_the_key(body: str, line: int, key: str, says: str) -> None:
    e = _refusal(body)
    assert (e.line, e.key) == (line, key)
    assert says in e.reason
    assert f"h.yaml:{line}: key '{key}': " in str(e)


def test_yaml_syntax_errors_and_empty_files_name_the_line() -> None:
    assert _refusal("checks:\n  - service: [\n").line == 3
    assert "empty file" in _refusal("").reason


def test_an_unreadable_file_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(HealthConfigError, match=r"^health config .*missing.yaml: cannot read: No such file"):
        load(str(tmp_path / "missing.yaml"))
    good = tmp_path / "h.yaml"
    good.write_text(GOOD)
    assert len(load(str(good)).checks) == 5


def test_the_readme_example_parses() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Health checks", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    cfg = parse(example, "README.md")
    assert [c.type for c in cfg.checks] == ["https", "http", "dns", "agent", "exec"]


ACTING = """\
checks:
  - service: "TCP 203.0.113.10:80"
    type: http
    act: true
    sorry_server: 192.0.2.99:8080
    slow_start: 30s
  - service: "TCP 203.0.113.10:80"
    dest: 192.0.2.14
    type: tcp
    sorry_server: 192.0.2.99:8080
  - service: "*"
    type: tcp
    act: false
"""


def test_acting_keys_parse_and_follow_the_flag_unless_set() -> None:
    cfg = parse(ACTING, "h.yaml")
    http, one, every = cfg.checks
    assert every.act is False and every.service is None
    assert (http.act, http.slow_start, http.sorry_server) == (
        True,
        30.0,
        DestMatch(AF_INET, "192.0.2.99", 8080),
    )
    assert (one.act, one.slow_start) == (None, 0.0)
    assert [c.acts(False) for c in cfg.checks] == [True, False, False]
    assert [c.acts(True) for c in cfg.checks] == [True, True, False]
    assert cfg.sorry_servers == {ServiceKey.tcp("203.0.113.10", 80): DestMatch(AF_INET, "192.0.2.99", 8080)}
    assert parse(GOOD).sorry_servers == {}


@pytest.mark.parametrize(
    ("body", "line", "key", "says"),
    [
        ("checks:\n  - service: '*'\n    type: tcp\n    act: maybe\n", 4, "act", "true or false"),
        ("checks:\n  - service: '*'\n    type: tcp\n    act: 1\n", 4, "act", "true or false"),
        (
            "checks:\n  - service: '*'\n    type: tcp\n    sorry_server: 192.0.2.9:80\n",
            4,
            "sorry_server",
            '"*"',
        ),
        (
            "checks:\n  - service: TCP 203.0.113.1:80\n    type: tcp\n    sorry_server: sorry.example\n",
            4,
            "sorry_server",
            "not an IP address",
        ),
        (
            "checks:\n  - service: TCP 203.0.113.1:80\n    type: tcp\n    act: false\n    slow_start: 5s\n",
            5,
            "slow_start",
            "act: false",
        ),
        (
            "checks:\n  - service: TCP 203.0.113.1:80\n    type: tcp\n    act: false\n"
            "    sorry_server: 192.0.2.9:80\n",
            5,
            "sorry_server",
            "act: false",
        ),
        ("checks:\n  - service: '*'\n    type: tcp\n    slow_start: 0s\n", 4, "slow_start", "above 0"),
        (
            "checks:\n  - service: TCP 203.0.113.1:80\n    type: tcp\n    sorry_server: 192.0.2.9:80\n"
            "  - service: TCP 203.0.113.1:80\n    type: http\n    sorry_server: 192.0.2.8:80\n",
            7,
            "sorry_server",
            "another one on line 2",
        ),
    ],
)
def test_acting_refusals_name_the_line_and_the_key(body: str, line: int, key: str, says: str) -> None:
    test_refusals_name_the_line_and_the_key(body, line, key, says)


def test_the_readme_acting_example_parses() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Acting on health", 1)[1]
    (spec,) = parse(section.split("```yaml\n", 1)[1].split("```", 1)[0], "README.md").checks
    assert (spec.act, spec.slow_start, spec.sorry_server) == (
        True,
        30.0,
        DestMatch(AF_INET, "192.0.2.99", 8080),
    )
