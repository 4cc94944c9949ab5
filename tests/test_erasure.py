"""P-ERASURE end to end: `relay erase ADDRESS` leaves no trace of the address in any table
of the relay's schema, except its suppression as a keyed hash, which P-SUPPRESS still
honours at RCPT."""

import asyncio
import os
import subprocess
import sys
from email.policy import SMTP
from pathlib import Path

import asyncpg
import pytest

from relay.queue.suppressions import suppression_key
from tests.support.peers import (
    ROOT,
    RelayConfig,
    RelayProcess,
    Sink,
    cli,
    db_rows,
    running,
    wait_for,
)
from tests.support.smtp_client import message, submission

pytestmark = pytest.mark.e2e

SECRET = b"e" * 32
BOB = "bob@inbox.example"
CONSENT_CSV = """address,consented_at,source,form_version,consent_text,method
Bob@Inbox.example,2026-03-01T10:00:00Z,203.0.113.7,signup-v3,"Yes, send news",double-opt-in
alice@inbox.example,2026-03-01T10:00:00Z,203.0.113.8,signup-v3,"Yes, send news",web-form
"""
REPORT = (
    b"From: Bob <Bob@Inbox.Example>\r\nTo: abuse@relay.test\r\nSubject: spam\r\n\r\n"
    b"I never asked for this.\r\n"
)


def holding(dsn: str, address: str) -> dict[str, int]:
    """Rows per `table.column` that contain `address`, over every text, bytea, json and
    text[] column of every table in the public schema (text case-insensitively; bytes as
    written, lower-cased, and case-insensitively where ASCII)."""

    async def search() -> dict[str, int]:
        conn = await asyncpg.connect(dsn)
        try:
            columns = await conn.fetch(
                "SELECT c.table_name, c.column_name, c.data_type, c.udt_name"
                " FROM information_schema.columns c JOIN information_schema.tables t"
                "  USING (table_schema, table_name)"
                " WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'"
                "  AND (c.data_type IN ('text', 'character varying', 'character', 'bytea',"
                "                       'json', 'jsonb') OR c.udt_name IN ('_text', '_varchar'))"
            )
            found = {}
            for c in columns:
                column = f'"{c["column_name"]}"'
                if c["data_type"] == "bytea":
                    where = (
                        f"position(convert_to($1, 'UTF8') in {column}) > 0"
                        f" OR position(convert_to($2, 'UTF8') in {column}) > 0"
                        f" OR position(lower($1) in lower(encode({column}, 'escape'))) > 0"
                    )
                elif c["data_type"] == "ARRAY":
                    where = f"position(lower($1) in lower(array_to_string({column}, ' '))) > 0"
                else:
                    where = f"position(lower($1) in lower({column}::text)) > 0"
                forms = (address, address.lower()) if c["data_type"] == "bytea" else (address,)
                query = f'SELECT count(*) FROM "{c["table_name"]}" WHERE {where}'
                count = await conn.fetchval(query, *forms)
                if count:
                    found[f"{c['table_name']}.{c['column_name']}"] = count
            return found
        finally:
            await conn.close()

    return asyncio.run(search())


def _send(relay: RelayProcess, recipients: list[str], subject: str, body: str = "Hi.\n") -> None:
    msg = message(to=", ".join(recipients), subject=subject, body=body)
    with submission(relay.config.submission_port) as client:
        client.sendmail("app@acme.example", recipients, msg.as_bytes(policy=SMTP))


def _settled(dsn: str) -> None:
    wait_for(
        lambda: not db_rows(dsn, "SELECT 1 FROM deliveries WHERE state = 'queued'"),
        30,
        "every delivery finished",
    )


def test_erase_leaves_no_trace_and_keeps_the_address_suppressed(
    relay_config: RelayConfig, sink: Sink, tmp_path: Path
) -> None:
    secret_file = tmp_path / "secret.key"
    secret_file.write_bytes(SECRET)
    relay_config.overrides = {"policy": {"unsubscribe_secret_file": str(secret_file)}}
    dsn = relay_config.dsn
    with running(relay_config, tmp_path) as relay:
        # mail to Alice alone, which must survive; mail to Bob (and Carol) that is delivered
        _send(relay, ["alice@inbox.example"], "For Alice")
        _send(relay, [BOB, "carol@inbox.example"], "For Bob and Carol")
        _send(relay, ["dave@inbox.example"], "About Bob", "Write to Bob: bob@inbox.example.\n")
        sink.wait_count(3)
        _settled(dsn)
        # mail to Bob that bounces: a hard-bounce suppression, events, and a DSN naming him
        sink.handler.script = ["550 5.1.1 <bob@inbox.example>: no such user"]
        _send(relay, [BOB], "Bounces")
        wait_for(lambda: any(not m for m, _, _ in sink.messages), 30, "the DSN at the sink")
        _settled(dsn)

        csv_file = tmp_path / "consent.csv"
        csv_file.write_text(CONSENT_CSV)
        assert "stored 2" in cli(relay, "consent", "import", str(csv_file), "--tenant", "acme")
        assert "added 1 of 1" in cli(
            relay, "suppression", "add", "Bob@Inbox.Example", "--tenant", "printer",
            "--reason", "complaint",
        )  # fmt: skip
        db_rows(
            dsn,
            "INSERT INTO feedback_reports (channel, raw, state, tenant, reporter) VALUES"
            " ('abuse', $1, 'processed', 'acme', 'bob@inbox.example'),"
            " ('abuse', 'About alice@inbox.example', 'processed', 'acme', 'alice@inbox.example')",
            REPORT,
        )

        before = holding(dsn, BOB)
        for table in ("messages", "deliveries", "events", "consent_records", "suppressions",
                      "feedback_reports"):  # fmt: skip
            assert any(k.startswith(f"{table}.") for k in before), (table, before)

        out = cli(relay, "erase", "Bob@Inbox.Example")

        assert out.startswith("erased Bob@Inbox.Example:"), out
        assert "messages               3  (with all their deliveries" in out  # 2 + the DSN
        assert "deliveries             4" in out  # Bob's two, Carol's, the DSN's
        assert "consent_records        1" in out and "feedback_reports       1" in out
        assert "suppressions           2  (kept as a keyed hash for acme, printer)" in out
        assert "bodies purged          1" in out  # Dave's message names Bob: its body goes
        assert holding(dsn, BOB) == {}
        # nothing else went: Alice's message, consent record and report are all there
        assert holding(dsn, "alice@inbox.example").keys() >= {
            "messages.content", "deliveries.recipient", "consent_records.address",
            "feedback_reports.reporter",
        }  # fmt: skip
        dave = db_rows(
            dsn,
            "SELECT m.content FROM messages m JOIN deliveries d ON d.message_id = m.id"
            " WHERE d.recipient = 'dave@inbox.example'",
        )
        assert [bytes(r["content"]) for r in dave] == [b""]  # the envelope stays
        rows = db_rows(dsn, "SELECT tenant, address, reason, source, hashed FROM suppressions")
        key = suppression_key(SECRET, BOB)
        assert sorted(tuple(r) for r in rows) == [
            ("acme", key, "hard-bounce", "erasure", True),
            ("printer", key, "complaint", "erasure", True),
        ]
        listing = cli(relay, "suppression", "ls")
        assert listing.count("hmac:") == 2 and "erasure" in listing

        # P-SUPPRESS finds the keyed hash: Bob, in any case, is still refused at RCPT
        with submission(relay.config.submission_port) as client:
            client.mail("app@acme.example")
            code, reply = client.rcpt("Bob@Inbox.Example")
            assert code == 550 and reply.decode().startswith(
                "5.7.1 [P-SUPPRESS] <Bob@Inbox.Example> is on tenant acme's suppression list "
                "(hard-bounce since "
            ), reply
            assert client.rcpt("alice@inbox.example")[0] == 250

        again = cli(relay, "erase", BOB)  # nothing left to erase; the hashes stay
        assert "messages               0" in again and "suppressions           0" in again
        assert len(db_rows(dsn, "SELECT 1 FROM suppressions WHERE hashed")) == 2


def test_erase_refuses_to_run_without_the_secret(relay_config: RelayConfig, tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(relay_config.render())
    result = subprocess.run(
        [sys.executable, "-m", "relay", "erase", BOB, "--config", str(config)],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if k != "RELAY_UNSUBSCRIBE_SECRET"},
    )  # fmt: skip
    assert result.returncode == 1
    assert "[policy] unsubscribe_secret_file or RELAY_UNSUBSCRIBE_SECRET" in result.stderr
