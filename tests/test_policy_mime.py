"""The fast walk of `relay.policy.mime` finds the text parts the standard library finds.

Property-based: messages of random structure (nested multipart/alternative, mixed,
related, message/rfc822), transfer encodings and text, built with the standard library,
must give the same decoded inline text parts from `text_parts` as from the standard
parser's walk; and hostile shapes stay within the walk's bounds.
"""

import time
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP, default

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.policy import mime
from relay.policy.context import parse_headers
from relay.policy.mime import text_parts
from tests.support.messages import stdlib_text_parts

TEXT = st.text(
    alphabet=st.characters(
        codec="utf-8", categories=("L", "N", "P", "S", "Zs"), exclude_characters="\r"
    ),
    max_size=300,
) | st.sampled_from(["Grüße aus Köln", "Łódź \u2013 żółć", "a" * 900, "=?utf-8?q?x?=", "--b\n"])
ENCODINGS = st.sampled_from(["7bit", "8bit", "quoted-printable", "base64"])


def leaf(draw: st.DrawFn) -> EmailMessage:
    part = EmailMessage()
    kind = draw(st.sampled_from(["plain", "html", "csv", "attachment"]))
    body = draw(TEXT)
    cte = draw(ENCODINGS)
    if cte == "7bit" and not body.isascii():
        cte = "quoted-printable"
    if kind == "attachment":
        part.set_content(body, disposition="attachment", filename="a.txt", cte=cte)
    elif kind == "html":
        part.set_content(f"<p>{body}</p>", subtype="html", cte=cte)
    else:
        part.set_content(body, subtype=kind, cte=cte)
    return part


@st.composite
def messages(draw: st.DrawFn, depth: int = 0) -> EmailMessage:
    if depth >= 3 or draw(st.booleans()):
        return leaf(draw)
    container = EmailMessage()
    container.make_mixed()
    container.replace_header(
        "Content-Type", f"multipart/{draw(st.sampled_from(['alternative', 'mixed', 'related']))}"
    )
    for _ in range(draw(st.integers(1, 3))):
        child = draw(messages(depth + 1))
        if draw(st.integers(0, 9)) == 0:
            wrapper = EmailMessage()
            wrapper.set_content(child)  # message/rfc822, shown inline
            child = wrapper
        container.attach(child)
    return container


def _same(text: str) -> str:
    return text.replace("\r\n", "\n").rstrip("\n")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_text_parts_are_the_standard_parsers(message: EmailMessage) -> None:
    message["Subject"] = "x"
    raw = message.as_bytes(policy=SMTP)
    ours = [(p.subtype, _same(p.text)) for p in text_parts(raw)]
    theirs = [(kind, _same(text)) for kind, text in stdlib_text_parts(raw)]
    assert ours == theirs


def test_header_block_is_the_standard_parsers() -> None:
    raw = (
        b"From: =?utf-8?q?M=C3=BCller?= <a@b.example>\r\nSubject: one\r\n two\r\n"
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nbody\r\n--x--\r\n"
    )
    ours, theirs = parse_headers(raw), BytesParser(policy=default).parsebytes(raw)
    assert list(ours.raw_items()) == list(theirs.raw_items())
    assert str(ours["From"]) == str(theirs["From"]) == "Müller <a@b.example>"


def test_quoted_printable_soft_break_inside_a_multibyte_character() -> None:
    raw = (
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=\r\n=BC=C3=9Fe\r\n"
    )
    assert [p.text for p in text_parts(raw)] == ["Grüße\r\n"]


def test_hostile_shapes_stay_within_the_bounds() -> None:
    """50,000 parts or 1,000 levels of nesting: only the first parts and levels are read,
    in far less time than the standard parser needs (no recursion error either)."""
    many = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        + b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(50_000))
        + b"--b--\r\n"
    )
    started = time.process_time()
    found = text_parts(many)
    assert len(found) == mime.MAX_PARTS - 1 and time.process_time() - started < 0.5
    nested = (
        b"".join(
            b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
            for i in range(1000)
        )
        + b"Content-Type: text/plain\r\n\r\ndeep\r\n"
    )
    assert text_parts(nested) == []
