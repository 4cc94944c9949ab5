"""CPU cost of the policy pipeline per message, against the relay's whole cost for it.

    python -m bench.policy_cost [--messages 300]

Two messages: a 2 KB transactional notice and a 60 KB HTML newsletter (bulk, meeting every
rule). For each, the DATA-phase pipeline runs in this process (`--repeat` times; CPU time
per message), and a real relay (`python -m relay serve`, embedded PostgreSQL, routed to a
capture sink) receives `--messages` of them over one authenticated session while its
process CPU time is read from /proc: receiving, policy, signing, storing and delivering.
The table shows both and the pipeline's share; results go to
bench/results/policy-latest.json and a dated copy.
"""

import argparse
import asyncio
import os
import smtplib
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from bench.results import write_results
from relay.config.schema import Identity, TenantSection
from relay.policy.context import PolicyContext
from relay.policy.pipeline import Pipeline

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.support.messages import FOOTER_HTML, FOOTER_TEXT, newsletter  # noqa: E402
from tests.support.peers import Amend, RelayConfig, RelayProcess, Sink  # noqa: E402
from tests.support.smtp_client import submission  # noqa: E402

TENANT = TenantSection(
    name="acme", domains=["acme.example"], networks=["10.0.0.0/8"], verified=True,
    require_consent=False,
    identity=Identity(name="Acme Widgets GmbH",
                      street="Hauptstraße 5", postal_code="10115", city="Berlin", country="DE",
                      contact_email="hello@acme.example"),
)  # fmt: skip


def notice() -> bytes:
    body = "\r\n".join(textwrap.wrap("Your order 4711 has shipped. " * 60, 76))
    return (
        "From: Acme <orders@acme.example>\r\nTo: alice@inbox.example\r\n"
        "Subject: Your order has shipped\r\nDate: Mon, 23 Nov 2026 22:00:00 +0000\r\n"
        "Message-ID: <o4711@acme.example>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n"
    ).encode()


def big_newsletter() -> bytes:
    article = "<p>" + "Our new widgets are lighter, stronger and greener. " * 8 + "</p>"
    html = "<table><tr><td>" + article * 137 + "</td></tr></table>" + FOOTER_HTML
    raw = newsletter(html=html, text="Read it in HTML.\n" + FOOTER_TEXT, cte="quoted-printable")
    return raw.replace(b"To: alice@inbox.example", b"List-Id: <news.acme.example>")


def pipeline_cpu_ms(raw: bytes, repeat: int) -> float:
    pipeline = Pipeline()

    async def all_runs() -> float:
        # one message first: what a relay builds once at start (phrase data, compiled
        # rules) is not a per-message cost
        await pipeline.run("data", PolicyContext(TENANT, "news@acme.example", [], raw))
        start = time.process_time()
        for _ in range(repeat):
            ctx = PolicyContext(TENANT, "news@acme.example", ["alice@inbox.example"], raw)
            verdicts = await pipeline.run("data", ctx)
            assert not any(v.refuses for v in verdicts), verdicts
        return time.process_time() - start

    return asyncio.run(all_runs()) / repeat * 1000


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def relay_cpu_ms(raw: bytes, messages: int) -> float:
    sink = Sink()
    with tempfile.TemporaryDirectory() as tmp:
        limits = {"max_message_size": "1MiB", "submissions_per_minute": 99999}
        config = RelayConfig(
            dsn="",
            data_dir=Path(tmp) / "data",
            routes={"inbox.example": sink.port},
            overrides={"tenants": Amend(acme={"limits": limits, "require_consent": False})},
        )
        relay = RelayProcess(config, Path(tmp))
        relay.start()
        try:
            assert relay.proc is not None
            with submission(config.submission_port) as client:
                client.sendmail("news@acme.example", ["alice@inbox.example"], raw)  # warm up
                sink.wait_count(1)
                before = _cpu_seconds(relay.proc.pid)
                for _ in range(messages):
                    client.sendmail("news@acme.example", ["alice@inbox.example"], raw)
            sink.wait_count(messages + 1, timeout=300)
            time.sleep(1)  # the last deliveries' bookkeeping
            return (_cpu_seconds(relay.proc.pid) - before) / messages * 1000
        except smtplib.SMTPException as exc:
            raise SystemExit(f"the relay refused the message: {exc}\n{relay.log()}") from exc
        finally:
            relay.stop()
            sink.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    rows = []
    for label, raw in (("2KB notice", notice()), ("60KB HTML newsletter", big_newsletter())):
        policy = pipeline_cpu_ms(raw, args.repeat)
        whole = relay_cpu_ms(raw, args.messages)
        rows.append({"message": label, "bytes": len(raw), "pipeline_cpu_ms": round(policy, 3),
                     "relay_cpu_ms_per_message": round(whole, 3),
                     "pipeline_share": round(policy / whole, 3)})  # fmt: skip
    print(f"{'message':22} {'bytes':>7} {'policy ms':>10} {'relay ms':>9} {'share':>6}")
    for r in rows:
        print(f"{r['message']:22} {r['bytes']:>7} {r['pipeline_cpu_ms']:>10} "
              f"{r['relay_cpu_ms_per_message']:>9} {r['pipeline_share']:>6.0%}")  # fmt: skip
    write_results("policy", {"messages": args.messages, "repeat": args.repeat, "rows": rows})


if __name__ == "__main__":
    main()
