"""The repo's relay.toml as a newcomer runs it: embedded PostgreSQL, the README's first message."""

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

import pytest

from tests.support.peers import ROOT, RelayConfig, RelayProcess, Sink, free_port

pytestmark = pytest.mark.e2e


def test_demo_config_delivers_the_readme_message_on_embedded_postgres(
    sink: Sink, tmp_path: Path
) -> None:
    """`make run` + `make sink` + the README's smtplib snippet, on free ports: the message
    reaches the sink, and SIGTERM stops the embedded PostgreSQL too."""
    ports = {"2587": free_port(), "2465": free_port(), "9587": free_port(), "2526": sink.port,
             "2525": free_port()}  # fmt: skip
    # The shipped file as text with only its ports changed: the demo as a newcomer runs it.
    text = (ROOT / "relay.toml").read_text()
    for old, new in ports.items():
        assert f':{old}"' in text or f"= {old}" in text
        text = text.replace(f':{old}"', f':{new}"').replace(f"port = {old}", f"port = {new}")
    config = RelayConfig(dsn="", data_dir=tmp_path / "data", http_port=ports["9587"])
    relay = RelayProcess(config, tmp_path)
    relay.write_config(text)
    relay.start()
    try:
        msg = EmailMessage()
        msg["From"] = "app@demo.example"
        msg["To"] = "alice@inbox.example"
        msg["Subject"] = "Hello from the relay"
        msg["Date"] = formatdate()
        msg.set_content("It works.\n")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", ports["2587"]) as client:
            client.starttls(context=context)
            client.login("demo", "demo-password")
            client.send_message(msg)
        ((mail_from, rcpts, content),) = sink.wait_count(1)
        assert (mail_from, rcpts) == ("app@demo.example", ["alice@inbox.example"])
        assert b"Subject: Hello from the relay" in content
        assert (tmp_path / "data" / "pg" / "postmaster.pid").exists()
    finally:
        assert relay.stop() == 0, relay.log()
    assert not (tmp_path / "data" / "pg" / "postmaster.pid").exists(), relay.log()
