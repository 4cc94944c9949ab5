"""relay.toml: the demo loads; every mistake names the file, the line and the key path, and
so does the warning about a key's old name."""

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

from relay.config.load import ConfigError, load_config, read_config
from relay.config.units import parse_duration, parse_size
from tests.support.peers import ACME_HASH, ROOT, Amend, demo_document, merged

# Text, not dicts, where a test's expected message names a line: the line is where the
# text puts the key, so the file is written out as the reader sees it.
MINIMAL = """\
[[listeners]]
name = "submission"
address = "127.0.0.1:2587"
"""
LISTENER = {"name": "submission", "address": "127.0.0.1:2587"}
"""MINIMAL's one listener, for files built as data when no message names a line."""


def _errors(tmp_path: Path, text: str) -> str:
    path = tmp_path / "relay.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert all(line.startswith(str(path)) for line in message.splitlines()), message
    return message


def test_demo_config_loads_with_absolute_data_dir() -> None:
    config = load_config(ROOT / "relay.toml")
    assert config.relay.data_dir == str(ROOT / "data")
    assert [t.name for t in config.tenants] == ["demo"]
    assert config.smtp.max_message_size == 50 * 1024 * 1024  # "50MiB"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("2h", 7200), ("5d", 432000), ("1.5h", 5400), ("2 minutes", 120),
     (30, 30), ("45", 45)],
)  # fmt: skip
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [("25MiB", 25 * 2**20), ("512KiB", 512 * 1024), ("10MB", 10_000_000), (1024, 1024)],
)
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("bogus = 1\n" + MINIMAL, ":1: bogus: unknown key", id="top-level key"),
        pytest.param(MINIMAL + "adress = 'x'\n", ":4: listeners[0].adress: unknown", id="listener"),
        pytest.param(
            "[relay]\nlog_levl = 'info'\n" + MINIMAL,
            ":2: relay.log_levl: unknown key",
            id="key in a table",
        ),
        pytest.param(
            MINIMAL + "[smtp]\ncommand_timeout = '5 parsecs'\n",
            ":5: smtp.command_timeout: expected a duration",
            id="bad duration",
        ),
        pytest.param(
            MINIMAL + "[smtp]\nmax_errors = 'many'\n",
            ":5: smtp.max_errors: Input should be a valid integer",
            id="wrong type",
        ),
        pytest.param(
            MINIMAL
            + """
[[tenants]]
name = "a"
domains = ["a.example"]
networks = ["10.0.0.0/8"]

[[tenants]]
name = "b"
domains = ["b.example"]
networks = ["10.1.0.0/16"]

[tenants.limits]
max_message_size = "lots"
""",
            ":16: tenants[1].limits.max_message_size: expected a size",
            id="second tenant limit",
        ),
        pytest.param(
            MINIMAL + "[[tenants]]\nname = 'a'\ndomains = ['a.example']\n"
            "networks = ['10.0.0.300/8']\n",
            ":7: tenants[0].networks",
            id="bad network",
        ),
        pytest.param(
            MINIMAL + "[[tenants]]\nname = 'a'\ndomains = ['a.example']\n",
            "tenants[0]: a tenant needs credentials or networks",
            id="no way to submit",
        ),
        pytest.param(
            MINIMAL + "[[tenants]]\nname = 'a'\ndomains = ['a.example']\n"
            "[[tenants.credentials]]\nusername = 'u'\npassword_hash = 'plain'\n",
            ":9: tenants[0].credentials[0].password_hash",
            id="password not hashed",
        ),
        pytest.param(
            MINIMAL + "[[routes]]\ndomain = 'x.example'\nhost = 'h'\nport = 99999\n",
            ":7: routes[0].port: Input should be less than or equal to 65535",
            id="port range",
        ),
        pytest.param(
            MINIMAL + "[tls]\ncert_file = 'cert.pem'\n",
            "tls: cert_file and key_file are given together",
            id="cert without key",
        ),
        pytest.param("[[listeners]\nname = 1\n", ":1: (file): not valid TOML", id="bad TOML"),
        pytest.param("[relay]\n", "listeners: required key is missing", id="no listeners"),
    ],
)
def test_errors_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in _errors(tmp_path, text)


def test_duplicate_logins_are_refused(tmp_path: Path) -> None:
    tenants = [
        {
            "name": name,
            "domains": [f"{name}.example"],
            "credentials": [{"username": "same", "password_hash": ACME_HASH}],
        }
        for name in ("a", "b")
    ]
    text = tomli_w.dumps({"listeners": [LISTENER], "tenants": tenants})
    assert "usernames must be unique, repeated: same" in _errors(tmp_path, text)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_check_config_command(tmp_path: Path) -> None:
    """`relay check-config` says OK for the demo, and exits 2 naming the key otherwise."""
    ok = subprocess.run(
        [sys.executable, "-m", "relay", "check-config", str(ROOT / "relay.toml")],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert ok.returncode == 0 and "OK" in ok.stdout
    broken = tmp_path / "broken.toml"
    broken.write_text(MINIMAL + "[delivery]\nconcurency = 10\n")
    bad = subprocess.run(
        [sys.executable, "-m", "relay", "check-config", str(broken)],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert f"{broken}:5: delivery.concurency: unknown key" in bad.stderr


def test_hash_password_makes_an_argon2_hash_that_verifies() -> None:
    """`relay hash-password` prints what `password_hash` takes; the password is not in it."""
    from argon2 import PasswordHasher

    made = subprocess.run(
        [sys.executable, "-m", "relay", "hash-password", "--password-stdin"],
        input="s3cret pass\n", capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    hashed = made.stdout.strip()
    assert hashed.startswith("$argon2id$") and "s3cret" not in hashed
    assert PasswordHasher().verify(hashed, "s3cret pass")


@pytest.mark.queue
def test_migrate_command_applies_once(empty_database: str, tmp_path: Path) -> None:
    """`relay migrate` applies the schema to a fresh database, then has nothing to do."""
    config = tmp_path / "relay.toml"
    config.write_text(tomli_w.dumps({"queue": {"dsn": empty_database}, "listeners": [LISTENER]}))

    def migrate() -> str:
        return subprocess.run(
            [sys.executable, "-m", "relay", "migrate", "--config", str(config)],
            capture_output=True, text=True, cwd=ROOT, check=True,
        ).stdout  # fmt: skip

    assert "applied 0001_initial.sql" in migrate()
    assert migrate().strip() == "schema up to date"


def test_relay_unsubscribe_needs_an_endpoint(tmp_path: Path) -> None:
    tenant = {
        "name": "a",
        "domains": ["a.example"],
        "networks": ["10.0.0.0/8"],
        "unsubscribe": "relay",
    }
    text = tomli_w.dumps({"listeners": [LISTENER], "tenants": [tenant]})
    assert 'use unsubscribe = "relay": set [policy] unsubscribe_url' in _errors(tmp_path, text)


def _tenant(name: str, domains: str, networks: str = '["192.0.2.0/24"]') -> str:
    """A tenant as text (after MINIMAL): the first case below names the line of a domain."""
    return f"[[tenants]]\nname = '{name}'\ndomains = {domains}\nnetworks = {networks}\n"


UNSAFE = {
    "a domain claimed twice": (
        _tenant("a", "['shop.example']") + _tenant("b", "['x.example', 'shop.example']"),
        ":10: tenants[1].domains[1]: shop.example is also a domain of tenant a",
    ),
    "a subdomain of another tenant's domain": (
        _tenant("a", "['shop.example']") + _tenant("b", "['news.shop.example']"),
        "tenants[1].domains[0]: news.shop.example overlaps shop.example, a domain of tenant a",
    ),
    "a public suffix": (
        _tenant("a", "['co.uk']"),
        "tenants[0].domains[0]: co.uk is a public suffix",
    ),
    "an open trusted network": (
        _tenant("a", "['a.example']", '["0.0.0.0/0"]'),
        "tenants[0].networks[0]: 0.0.0.0/0 is wider than /16 ([smtp] min_network_prefix_ipv4)",
    ),
    "an IPv6 network too wide": (
        _tenant("a", "['a.example']", '["2001:db8::/32"]'),
        "tenants[0].networks[0]: 2001:db8::/32 is wider than /48",
    ),
}


@pytest.mark.parametrize("case", UNSAFE)
def test_unsafe_configs_are_refused_naming_the_key(tmp_path: Path, case: str) -> None:
    text, expected = UNSAFE[case]
    assert expected in _errors(tmp_path, MINIMAL + text)


def test_the_demo_password_is_refused_off_loopback(tmp_path: Path) -> None:
    """The shipped demo credentials are fine on 127.0.0.1 and refused elsewhere."""
    path = tmp_path / "relay.toml"
    path.write_text((ROOT / "relay.toml").read_text())
    load_config(path)
    exposed = merged(demo_document(), {"listeners": Amend(submission={"address": "0.0.0.0:2587"})})
    message = _errors(tmp_path, tomli_w.dumps(exposed))
    assert "tenants[0].credentials[0].password_hash: the demo password" in message
    assert "(submission)" in message


TENANT_WITH_LIMITS = """
[[tenants]]
name = "{name}"
domains = ["{name}.example"]
networks = ["{network}"]

[tenants.limits]
{limits}
"""


def _limited(limits: str, name: str = "a", network: str = "10.0.0.0/24") -> str:
    """A tenant with these `[tenants.limits]` lines."""
    return TENANT_WITH_LIMITS.format(name=name, network=network, limits=limits)


def test_old_key_names_load_as_the_new_ones_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file written for the previous release still loads, and says what to rename where."""
    path = tmp_path / "relay.toml"
    path.write_text(
        MINIMAL + "[delivery]\nmessages_per_minute = 120\n" + _limited("messages_per_minute = 30")
    )
    config, warnings = read_config(path)
    assert config.delivery.default_site_messages_per_minute == 120
    assert config.tenants[0].limits.submissions_per_minute == 30
    assert warnings == [
        f"{path}:5: delivery.messages_per_minute is now delivery.default_site_messages_per_minute"
        " (the old name is still read in this release, not in the next)",
        f"{path}:13: tenants[0].limits.messages_per_minute is now"
        " tenants[0].limits.submissions_per_minute"
        " (the old name is still read in this release, not in the next)",
    ]
    with caplog.at_level(logging.WARNING, logger="relay.config.load"):
        load_config(path)
    assert [r.getMessage() for r in caplog.records] == warnings


def test_new_key_names_load_without_warnings(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(
        MINIMAL
        + "[delivery]\ndefault_site_messages_per_minute = 120\n"
        + _limited("submissions_per_minute = 30")
    )
    config, warnings = read_config(path)
    assert config.delivery.default_site_messages_per_minute == 120
    assert config.tenants[0].limits.submissions_per_minute == 30
    assert warnings == []


def test_connections_per_domain_loads_as_connections_per_site(tmp_path: Path) -> None:
    """The connection limit has always applied per site; a file with its old name loads
    with the same value and says what to rename."""
    path = tmp_path / "relay.toml"
    path.write_text(MINIMAL + "[delivery]\nconnections_per_domain = 4\n")
    config, warnings = read_config(path)
    assert config.delivery.connections_per_site == 4
    assert warnings == [
        f"{path}:5: delivery.connections_per_domain is now delivery.connections_per_site"
        " (the old name is still read in this release, not in the next)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            MINIMAL + "[delivery]\nmessages_per_minute = 1\ndefault_site_messages_per_minute = 2\n",
            ":5: delivery.default_site_messages_per_minute: set twice, also as"
            " delivery.messages_per_minute (its old name);"
            " keep only default_site_messages_per_minute",
            id="delivery",
        ),
        pytest.param(
            MINIMAL
            + _limited("submissions_per_minute = 1")
            + _limited("messages_per_minute = 1\nsubmissions_per_minute = 2", "b", "10.1.0.0/24"),
            ":19: tenants[1].limits.submissions_per_minute: set twice, also as"
            " tenants[1].limits.messages_per_minute (its old name);"
            " keep only submissions_per_minute",
            id="second tenant",
        ),
        pytest.param(
            MINIMAL + "[delivery]\nconnections_per_domain = 1\nconnections_per_site = 2\n",
            ":5: delivery.connections_per_site: set twice, also as"
            " delivery.connections_per_domain (its old name); keep only connections_per_site",
            id="connections",
        ),
    ],
)
def test_old_and_new_name_together_are_refused(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in _errors(tmp_path, text)


def test_a_bad_value_under_an_old_name_names_the_key_as_written(tmp_path: Path) -> None:
    text = MINIMAL + _limited("messages_per_minute = 0")
    assert (
        ":11: tenants[0].limits.messages_per_minute: Input should be greater than or equal to 1"
        in _errors(tmp_path, text)
    )


def test_check_config_prints_the_old_key_names(tmp_path: Path) -> None:
    """`relay check-config` accepts a file with an old key name and names old and new key on
    stderr (as it does errors), and refuses a file that sets both."""
    old = tmp_path / "old.toml"
    old.write_text(MINIMAL + _limited("messages_per_minute = 30"))
    ok = subprocess.run(
        [sys.executable, "-m", "relay", "check-config", str(old)],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert ok.returncode == 0 and "OK" in ok.stdout
    assert (
        f"{old}:11: tenants[0].limits.messages_per_minute is now"
        " tenants[0].limits.submissions_per_minute" in ok.stderr
    )
    both = tmp_path / "both.toml"
    both.write_text(MINIMAL + _limited("messages_per_minute = 30\nsubmissions_per_minute = 30"))
    bad = subprocess.run(
        [sys.executable, "-m", "relay", "check-config", str(both)],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert (
        f"{both}:11: tenants[0].limits.submissions_per_minute: set twice,"
        " also as tenants[0].limits.messages_per_minute" in bad.stderr
    )
