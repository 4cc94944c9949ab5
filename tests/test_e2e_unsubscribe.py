"""P-UNSUB-PROCESS end to end: the relay's signed one-click URI (RFC 8058), followed over
real HTTP, suppresses the recipient at once; a GET or a tampered token changes nothing."""

import email
import email.policy
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from relay.config.schema import PolicySection
from relay.web import oneclick
from tests.support.messages import newsletter
from tests.support.peers import Amend, RelayConfig, RelayProcess, Sink, db_rows, running
from tests.support.smtp_client import submission

SECRET = b"s" * 40


def _http(
    relay: RelayProcess, method: str, path: str, body: bytes | None = None
) -> tuple[int, str]:
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
    request = urllib.request.Request(relay.url(path), data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _newsletter(to: str) -> bytes:
    """A newsletter meeting every bulk rule, without List-Unsubscribe: the relay adds its own."""
    raw = newsletter(unsubscribe=None, post=None)
    return raw.replace(
        b"To: alice@inbox.example", f"To: {to}\r\nList-Id: <news.acme.example>".encode()
    )


@pytest.mark.e2e
def test_one_click_unsubscribe_over_http(
    relay_config: RelayConfig, sink: Sink, tmp_path: Path
) -> None:
    secret_file = tmp_path / "unsubscribe.key"
    secret_file.write_bytes(SECRET)
    relay_config.overrides = {
        "policy": {
            "unsubscribe_url": "https://relay.test/u",
            "unsubscribe_secret_file": str(secret_file),
        },
        "tenants": Amend(acme={"unsubscribe": "relay", "require_consent": False}),
    }
    dsn = relay_config.dsn
    with running(relay_config, tmp_path) as relay:
        with submission(relay.config.submission_port) as client:
            client.sendmail(
                "news@acme.example", ["alice@inbox.example"], _newsletter("alice@inbox.example")
            )
        ((_, _, content),) = sink.wait_count(1)
        delivered = email.message_from_bytes(content, policy=email.policy.default)
        assert delivered["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        found = re.fullmatch(r"<(https://relay\.test/u/\S+)>", str(delivered["List-Unsubscribe"]))
        assert found is not None
        path = urlsplit(found.group(1)).path

        def suppressed() -> list[tuple[str, str, str, str]]:
            rows = db_rows(dsn, "SELECT tenant, address, reason, source FROM suppressions")
            return [(r["tenant"], r["address"], r["reason"], r["source"]) for r in rows]

        # GET: a page with a button that POSTs the RFC 8058 field; nothing changes
        status, page = _http(relay, "GET", path)
        assert status == 200 and "Unsubscribe" in page
        assert (
            '<form method="post">' in page and 'name="List-Unsubscribe" value="One-Click"' in page
        )
        assert suppressed() == []

        # a token whose payload lost or changed one character: 403, nothing changes
        token = path.rsplit("/", 1)[1]
        payload, mac = token.split(".")
        flipped = payload[:5] + ("A" if payload[5] != "A" else "B") + payload[6:]
        for bad in (f"{flipped}.{mac}", f"{payload[:-1]}.{mac}", "not-a-token"):
            bad_path = f"/u/{bad}"
            assert _http(relay, "POST", bad_path, b"List-Unsubscribe=One-Click")[0] == 403
            assert _http(relay, "GET", bad_path)[0] == 403
        assert suppressed() == []

        # the one-click POST: suppressed at once, the event and its count recorded
        status, page = _http(relay, "POST", path, b"List-Unsubscribe=One-Click")
        assert status == 200 and "You are unsubscribed" in page
        assert suppressed() == [("acme", "alice@inbox.example", "unsubscribe", "one-click")]
        assert _http(relay, "POST", path, b"")[0] == 200  # again, as the page's button: harmless
        events = db_rows(dsn, "SELECT kind, recipient, message_id, detail FROM events"
                              " WHERE kind = 'unsubscribed'")  # fmt: skip
        assert [(e["recipient"], e["message_id"], json.loads(e["detail"])) for e in events] == [
            ("alice@inbox.example", None, {"message_id": str(delivered["Message-ID"])})
        ]
        rates = db_rows(dsn, "SELECT tenant, sum(unsubscribed) AS n FROM rates GROUP BY tenant")
        assert [(r["tenant"], r["n"]) for r in rates] == [("acme", 1)]

        # P-SUPPRESS: the next message to that recipient is refused at RCPT
        with submission(relay.config.submission_port) as client:
            client.mail("news@acme.example")
            code, reply = client.rcpt("Alice@inbox.example")
        assert code == 550 and reply.decode().startswith("5.7.1 [P-SUPPRESS] "), reply


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("https://relay.test/u", "/u/{token}"),
        ("https://relay.test/mail/unsubscribe/", "/mail/unsubscribe/{token}"),
        # at the root only the token's shape is claimed, not every one-segment path
        ("https://relay.test", r"/{token:[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+}"),
    ],
)
def test_route_is_the_path_of_the_configured_url(url: str, path: str) -> None:
    assert oneclick.route_path(url) == path


def test_not_mounted_without_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """No secret: the endpoint is not mounted, so its paths answer 404."""
    monkeypatch.delenv("RELAY_UNSUBSCRIBE_SECRET", raising=False)
    app = web.Application()
    policy = PolicySection(unsubscribe_url="https://relay.test/u")
    assert oneclick.add_routes(app, None, policy) is None  # type: ignore[arg-type]
    assert list(app.router.routes()) == []
