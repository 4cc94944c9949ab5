"""Unit tests of the SMTP building blocks: DATA bytes, envelope paths, enhanced codes."""

import random
import re

import pytest

from relay.mail.address import AddressError, parse_path
from relay.mail.wire import DataProblem, normalize_newlines, problem_in, stuff, unstuff
from relay.smtp import replies


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"Subject: x\r\n\r\nok\r\n", None),
        (b"Subject: x\r\n\r\nnul\x00here\r\n", DataProblem.NUL),
        (b"Subject: x\r\n\r\nbare\nlf\r\n", DataProblem.BARE_NEWLINE),
        (b"Subject: x\r\n\r\nbare\rcr\r\n", DataProblem.BARE_NEWLINE),
        (b"Subject: x\r\n\r\nend\n", DataProblem.BARE_NEWLINE),
    ],
)
def test_data_problems(data: bytes, problem: DataProblem | None) -> None:
    """RFC 5321 2.3.8: CR and LF only as CRLF; NUL never."""
    assert problem_in(data) is problem


def test_bare_newlines_are_found_like_the_rfc_reads() -> None:
    """Counting CRLF, CR and LF agrees with a search for a CR not followed by LF or an LF not
    preceded by CR, on random mixes of the three (and of the CRLF.CRLF pieces)."""
    bare = re.compile(rb"\r(?!\n)|(?<!\r)\n")
    pieces = [b"\r", b"\n", b"\r\n", b"a", b".", b"\r\n.\r\n", b"\n\r"]
    chooser = random.Random(5321)
    for _ in range(3000):
        data = b"".join(chooser.choice(pieces) for _ in range(chooser.randrange(0, 12)))
        expected = DataProblem.BARE_NEWLINE if bare.search(data) else None
        assert problem_in(data) is expected, data


def test_normalize_turns_every_bare_newline_into_crlf() -> None:
    assert normalize_newlines(b"a\nb\rc\r\nd\n\r") == b"a\r\nb\r\nc\r\nd\r\n\r\n"


def test_unstuff_removes_the_transparency_dot() -> None:
    """RFC 5321 4.5.2: a leading dot is removed from every line that has one."""
    assert unstuff(b"..first\r\nplain\r\n..\r\n...two\r\n") == b".first\r\nplain\r\n.\r\n..two\r\n"


def test_stuff_is_what_aiosmtplib_would_send() -> None:
    """The outbound DATA text equals aiosmtplib's own normalisation and dot-stuffing plus the
    end marker, on random mixes of dots and line endings, and `unstuff` undoes it."""
    from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

    pieces = [b"\r", b"\n", b"\r\n", b"a", b".", b"..", b"\r\n.\r\n", b"\n.", b" "]
    chooser = random.Random(4552)
    for _ in range(3000):
        data = b"".join(chooser.choice(pieces) for _ in range(chooser.randrange(0, 14)))
        expected = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data)) + b".\r\n"
        assert stuff(data) == expected, data
        if not problem_in(data) and data.endswith(b"\r\n"):
            assert unstuff(stuff(data)[: -len(b".\r\n")]) == data, data


@pytest.mark.parametrize(
    ("arg", "address", "params"),
    [
        ("FROM:<a@b.example>", "a@b.example", {}),
        ("FROM: <a@b.example>", "a@b.example", {}),
        (
            "from:<a@b.example> SIZE=100 BODY=8BITMIME",
            "a@b.example",
            {"SIZE": "100", "BODY": "8BITMIME"},
        ),
        ("FROM:<> SMTPUTF8", "", {"SMTPUTF8": None}),
        ("FROM:<@relay.example:a@b.example>", "a@b.example", {}),
        ('FROM:<"quoted.local"@b.example>', '"quoted.local"@b.example', {}),
        ("FROM:<üser@bücher.example>", "üser@bücher.example", {}),
    ],
)
def test_valid_paths(arg: str, address: str, params: dict[str, str | None]) -> None:
    path = parse_path(arg, "FROM:")
    assert (path.address, path.params) == (address, params)


def test_domain_becomes_a_label() -> None:
    """Domains are compared as IDNA A-labels (RFC 5890)."""
    assert parse_path("TO:<x@Bücher.Example>", "TO:").domain == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    "arg",
    [
        "FROM:a@b.example",  # no angle brackets
        "FROM:<a@b.example",  # unterminated
        "FROM:<a b@b.example>",  # space
        "FROM:<a@b.example>x",  # text glued after the path
        "FROM:<a>b@b.example>",  # a second '>'
        "FROM:<a\r@b.example>",  # CR
        "FROM:<a\x00@b.example>",  # NUL
        "FROM:<a@b.example\rRCPT TO:<c@d.example>>",  # a smuggled command
        "FROM:<ab.example>",  # no @
        "FROM:<a@localhost>",  # not fully qualified
        "FROM:<a@[192.0.2.1]>",  # address literal
        "FROM:<a..b@b.example>",  # malformed local part
        "FROM:<a@b.example> SIZE=",  # parameter without a value
    ],
)
def test_invalid_paths(arg: str) -> None:
    with pytest.raises(AddressError):
        parse_path(arg, "FROM:")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("500 Error: bad syntax", "500 5.5.2 bad syntax"),
        ("503 Error: send HELO first", "503 5.5.1 send HELO first"),
        ("250 OK", "250 2.0.0 OK"),
        ("221 Bye", "221 2.0.0 Bye"),
        ("250 2.1.0 Sender OK", "250 2.1.0 Sender OK"),
        ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),
        ("334 VXNlcm5hbWU6", "334 VXNlcm5hbWU6"),
    ],
)
def test_enhanced_codes_added_where_missing(reply: str, expected: str) -> None:
    """RFC 2034 3: once ENHANCEDSTATUSCODES is advertised, every 2/4/5xx reply has one."""
    assert replies.with_enhanced_code(reply) == expected
