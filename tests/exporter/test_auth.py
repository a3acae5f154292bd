"""web-config.yml parsing, basic auth against bcrypt, roles, the rate limiter, ramp plans."""

from __future__ import annotations

import subprocess
from pathlib import Path

import bcrypt
import pytest

from lvstop.errors import LvstopError
from lvstop.exporter.auth import (
    Authenticator,
    RateLimiter,
    Role,
    Throttled,
    WebConfig,
    load_web_config,
    network_of,
)
from lvstop.exporter.ramp import plan

from .support import basic

ALICE = bcrypt.hashpw(b"alice-pw", bcrypt.gensalt(5)).decode()


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "web-config.yml"
    p.write_text(text)
    return p


def test_exporter_toolkit_file_with_roles(tmp_path: Path) -> None:
    cfg = load_web_config(
        write(
            tmp_path,
            f"basic_auth_users:\n  alice: {ALICE}\n  bob: {ALICE}\nroles:\n  bob: admin\n"
            "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
        )
    )
    assert cfg.auth and cfg.tls is None and cfg.roles == {"bob": Role.ADMIN}
    assert cfg.headers == {"X-Frame-Options": "deny"}
    auth = Authenticator(cfg)
    alice = auth.check(basic("alice", "alice-pw"), "c")
    assert alice is not None and alice.role is Role.READER  # no role given: read only


@pytest.mark.parametrize(
    "text,needle",
    [
        ("basic_auth_user:\n  a: b\n", "unknown key(s) in the file: basic_auth_user"),
        ("basic_auth_users:\n  carol: $2b$10$short\n", "basic_auth_users.carol: not a bcrypt hash"),
        ("basic_auth_users:\n  carol: $2b$xx$\n", "basic_auth_users.carol: not a bcrypt hash"),
        (f"basic_auth_users:\n  carol: {ALICE[:4]}99{ALICE[6:]}\n", "cost 04..31"),
        ("basic_auth_users:\n  a: plain\n", "not a bcrypt hash"),
        (f"basic_auth_users:\n  a: {ALICE}\nroles:\n  b: admin\n", "no such user"),
        (f"basic_auth_users:\n  a: {ALICE}\nroles:\n  a: root\n", "reader, operator or admin"),
        ("tls_server_config:\n  cert_file: x.pem\n", "needs cert_file and key_file"),
        ("tls_server_config:\n  cert_file: x.pem\n  key_file: y.pem\n", "cannot load cert_file"),
        (
            "tls_server_config:\n  cert_file: x\n  key_file: y\n  ocsp: 1\n",
            "unknown key(s) in tls_server_config",
        ),
        ("basic_auth_users: [1\n", "not valid YAML (line 2)"),
        (f"basic_auth_users:\n  a: {ALICE}\n  a: {ALICE}\n", "not valid YAML (line 3): key 'a' given twice"),
        (f"basic_auth_users:\n  a: {ALICE}\nroles:\n  a: admin\n  a: reader\n", "key 'a' given twice"),
        ("tls_server_config:\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "cipher_suites is not supported"),
        ("tls_server_config:\n  curve_preferences: [X25519]\n", "curve_preferences is not supported"),
        (
            "tls_server_config:\n  client_allowed_sans: [a.example]\n",
            "needs client_auth_type RequireAndVerify",
        ),
        ("http_server_config:\n  headers:\n    Content-Type: text/html\n", "'Content-Type' cannot be set"),
        ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "must be one of deny, sameorigin"),
        ('http_server_config:\n  headers:\n    X-XSS-Protection: "1\\r\\nSet-Cookie: a=b"\n', "one line"),
        ("- a\n", "must be a mapping"),
    ],
)
def test_bad_web_config_is_one_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(LvstopError) as e:
        load_web_config(write(tmp_path, text))
    assert needle in str(e.value) and str(tmp_path) in str(e.value)


def test_tls_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-subj", "/CN=localhost", "-days", "1", "-keyout", str(tmp_path / "tls" / "k.pem"),
         "-out", str(tmp_path / "tls" / "c.pem")],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    cfg = load_web_config(
        write(
            tmp_path,
            "tls_server_config:\n  cert_file: tls/c.pem\n  key_file: tls/k.pem\n  min_version: TLS13\n",
        )
    )
    assert cfg.tls is not None and cfg.tls.minimum_version.name == "TLSv1_3"
    with pytest.raises(LvstopError, match="needs client_ca_file"):
        load_web_config(
            write(
                tmp_path,
                "tls_server_config:\n  cert_file: tls/c.pem\n  key_file: tls/k.pem\n"
                "  client_auth_type: RequireAndVerifyClientCert\n",
            )
        )


def bcrypt_checks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The hashes bcrypt.checkpw is asked to check from now on."""
    checked: list[bytes] = []
    real = bcrypt.checkpw

    def spy(pw: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        return real(pw, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", spy)
    return checked


def test_unknown_users_cost_one_bcrypt_check_like_wrong_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = Authenticator(WebConfig(users={"alice": ALICE.encode()}))
    checked = bcrypt_checks(monkeypatch)
    assert auth.check(basic("mallory", "alice-pw"), "c") is None
    assert auth.check(basic("alice", "wrong"), "c") is None
    assert len(checked) == 2
    assert checked[0] != ALICE.encode() and checked[0].split(b"$")[2] == checked[1].split(b"$")[2] == b"05"
    assert auth.check(basic("alice", "alice-pw"), "c") is not None
    assert auth.check(basic("alice", "alice-pw"), "c") is not None  # verified once, then cached
    assert len(checked) == 3
    for header in (None, "Bearer x", "Basic", "Basic ???", basic("alice", "")[:-2] + "!!"):
        assert auth.check(header, "c") is None


def test_without_users_everyone_is_an_anonymous_operator() -> None:
    who = Authenticator(WebConfig()).check(None, "c")
    assert who is not None and (who.user, who.role) == ("anonymous", Role.OPERATOR)


def test_unverified_credentials_are_rate_limited_per_client_verified_ones_are_not() -> None:
    now = [0.0]
    guesses = RateLimiter(rate=1.0, burst=2, clock=lambda: now[0])
    auth = Authenticator(WebConfig(users={"alice": ALICE.encode()}), guesses=guesses)
    assert auth.check(basic("alice", "alice-pw"), "a") is not None  # verified: one token spent
    assert auth.check(basic("alice", "wrong"), "a") is None  # the second token
    with pytest.raises(Throttled) as t:
        auth.check(basic("alice", "guess"), "a")
    assert t.value.wait == pytest.approx(1.0)
    assert auth.check(basic("alice", "alice-pw"), "a") is not None  # cached: a scraper is never throttled
    assert auth.check(basic("alice", "guess"), "b") is None  # another client has its own bucket
    now[0] += 1.0
    assert auth.check(basic("alice", "guess"), "a") is None  # a token came back


def test_rate_limiter_is_a_token_bucket_per_client() -> None:
    now = [0.0]
    rl = RateLimiter(rate=0.5, burst=2, clock=lambda: now[0])
    assert [rl.allow("a") for _ in range(3)] == [0, 0, 2.0]
    assert rl.allow("b") == 0  # another client has its own bucket
    now[0] += 2.0
    assert rl.allow("a") == 0 and rl.allow("a") > 0


@pytest.mark.parametrize(
    "start,target,duration,steps,expected",
    [
        (100, 40, 0.3, 3, [(0.1, 80), (0.2, 60), (0.3, 40)]),
        (0, 10, 10.0, None, [(5.0, 5), (10.0, 10)]),  # default: one step per 5 s
        (1, 3, 10.0, 10, [(3.0, 2), (8.0, 3)]),  # equal neighbours merged: a step when the weight moves
        (5, 5, 10.0, 3, []),
        (10, 0, 0.0, 2, [(0.0, 5), (0.0, 0)]),
    ],
)
def test_ramp_plan(
    start: int, target: int, duration: float, steps: int | None, expected: list[tuple[float, int]]
) -> None:
    got = plan(start, target, duration, steps)
    assert [(round(t, 6), w) for t, w in got] == expected


def test_a_password_longer_than_bcrypt_reads_is_a_failed_login_not_an_error() -> None:
    auth = Authenticator(WebConfig(users={"alice": ALICE.encode()}))
    long = "alice-pw" + "x" * 70  # 78 bytes: bcrypt 5 raises ValueError on these
    assert auth.check(basic("alice", long), "c") is None
    assert auth.check(basic("mallory", long), "c") is None


def test_the_fake_hash_costs_the_dearest_configured_cost() -> None:
    cheap, dear = bcrypt.hashpw(b"a", bcrypt.gensalt(4)), bcrypt.hashpw(b"b", bcrypt.gensalt(6))
    auth = Authenticator(WebConfig(users={"a": cheap, "b": dear}))
    assert auth._dummy.split(b"$")[2] == b"06"


def test_guesses_share_a_budget_per_network_and_one_for_everyone(monkeypatch: pytest.MonkeyPatch) -> None:
    checks = bcrypt_checks(monkeypatch)
    now = [0.0]
    auth = Authenticator(
        WebConfig(users={"alice": ALICE.encode()}),
        guesses=RateLimiter(rate=1.0, burst=3, clock=lambda: now[0]),
        all_guesses=RateLimiter(rate=1.0, burst=5, clock=lambda: now[0]),
    )

    def outcome(client: str) -> str:
        try:
            return "401" if auth.check(basic("alice", "wrong"), client) is None else "200"
        except Throttled:
            return "429"

    # 50 loopback addresses are one host: one budget, not 50 bcrypt checks.
    assert [outcome(f"127.0.0.{i}") for i in range(1, 51)] == ["401"] * 3 + ["429"] * 47
    assert [outcome(f"2001:db8::{i}") for i in range(1, 6)] == ["401"] * 2 + ["429"] * 3  # 5 for everyone
    assert outcome("198.51.100.7") == "429"  # another network, but everyone's budget is spent
    assert len(checks) == 5
    now[0] += 10
    assert outcome("::ffff:127.0.0.9") == "401"  # IPv4-mapped loopback is loopback too


def test_network_of() -> None:
    assert network_of("127.8.9.10") == network_of("::1") == "loopback"
    assert network_of("198.51.100.7") == network_of("::ffff:198.51.100.200") == "198.51.100.0/24"
    assert network_of("2001:db8:1:2:3::4") == "2001:db8:1:2::/64"
