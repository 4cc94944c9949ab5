"""Messages several test modules send or parse: a newsletter that meets every bulk rule,
the bulk tenant it comes from, and the standard library's reading of a message's text parts
(what the relay's own MIME walk is checked against)."""

from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP, default

from relay.config.schema import Identity, TenantSection

BULK_TENANT = TenantSection(
    name="acme",
    domains=["acme.example"],
    networks=["10.0.0.0/8"],
    stream="bulk",
    verified=True,
    require_consent=False,
    identity=Identity(
        name="Acme Widgets GmbH",
        street="Hauptstraße 5",
        postal_code="10115",
        city="Berlin",
        country="DE",
        contact_email="hello@acme.example",
    ),
)
"""acme as a verified bulk sender whose identity matches the newsletter's footer."""
FOOTER_HTML = (
    "<p>Acme Widgets GmbH &middot; Hauptstra&szlig;e 5,<br>10115 Berlin, Germany &middot; "
    '<a href="mailto:hello@acme.example">hello@acme.example</a></p>'
    "<p>You receive this because you subscribed at acme.example/news.</p>"
    '<p><a href="https://acme.example/u/abc">Unsubscribe</a></p>'
)
FOOTER_TEXT = (
    "Acme Widgets GmbH, Hauptstraße 5, 10115 Berlin, Germany, hello@acme.example\n"
    "You receive this because you subscribed at acme.example/news.\n"
    "Unsubscribe: https://acme.example/u/abc\n"
)


def newsletter(
    html: str = FOOTER_HTML,
    text: str = FOOTER_TEXT,
    unsubscribe: str | None = "<https://acme.example/u/abc>, <mailto:u@acme.example>",
    post: str | None = "List-Unsubscribe=One-Click",
    cte: str = "quoted-printable",
) -> bytes:
    """acme's newsletter as multipart/alternative; by default it meets every bulk rule, and
    each argument lets a test break one."""
    msg = EmailMessage()
    msg["From"] = "Acme News <news@acme.example>"
    msg["To"] = "alice@inbox.example"
    msg["Subject"] = "Our November news"
    msg["Date"] = "Mon, 23 Nov 2026 22:00:00 +0000"
    msg["Message-ID"] = "<n1@acme.example>"
    if unsubscribe:
        msg["List-Unsubscribe"] = unsubscribe
    if post:
        msg["List-Unsubscribe-Post"] = post
    msg.set_content("News of the month.\n\n" + text, cte=cte)
    msg.add_alternative(f"<html><body><h1>News</h1>{html}</body></html>", subtype="html", cte=cte)
    return msg.as_bytes(policy=SMTP)


def stdlib_text_parts(raw: bytes) -> list[tuple[str, str]]:
    """(subtype, decoded text) of each inline text/plain and text/html part, as the standard
    parser's walk finds them."""
    found = []
    for part in BytesParser(policy=default).parsebytes(raw).walk():
        if part.is_multipart() or part.get_content_disposition() == "attachment":
            continue
        if part.get_content_type() in ("text/plain", "text/html"):
            found.append((part.get_content_subtype(), part.get_content()))
    return found
