"""Property-based fuzzing of the parsers that face the internet, within a bounded budget.

Hypothesis drives each parser with inputs it builds and shrinks: SMTP command lines against
the real relay on loopback (every reply well formed, with an enhanced status code on every
4xx and 5xx, and no internal error logged), the MAIL and RCPT path parser, the DATA scan
fed in random pieces, the MIME walk at submission within its limits, and the ARF, DSN and
forwarded-report parsers on damaged samples (an answer, never their last-resort handler).
"""

import random
import re
import socket
import time
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from relay.feedback.reports.arf import parse_arf, parse_forwarded
from relay.feedback.reports.bounce import parse_bounce
from relay.mail.address import AddressError, parse_path
from relay.mail.wire import DataScan, problem_in
from relay.policy import mime
from tests.support.mutate import mutate
from tests.support.peers import RelayProcess

SAMPLES = Path(__file__).parent / "samples" / "feedback"
REPORTS = [p.read_bytes() for p in sorted(SAMPLES.glob("*.eml"))]
BUDGET = settings(max_examples=200, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])  # fmt: skip

LINE_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=80
) | st.sampled_from(["", " ", "<>", "<a@b.example>", "x" * 1100, "\x00", "\t", "=", "*"])
ADDRESS = st.builds(
    "{}@{}".format,
    st.sampled_from(["alice", "a.b", '"q u"', "", "x" * 70, "ü", "a\x01", "@r:a"]),
    st.sampled_from(["inbox.example", "xn--bcher-kva.example", "bücher.example", "[1.2.3.4]",
                     "-bad-.example", "a..b", "", "x" * 300]),
)  # fmt: skip
PARAMS = st.lists(
    st.sampled_from(["SIZE=10", "SIZE=x", "SIZE=", "BODY=8BITMIME", "BODY=BINARYMIME",
                     "SMTPUTF8", "SMTPUTF8=1", "RET=FULL", "=", "AUTH=<>", "X" * 600]),
    max_size=3,
).map(" ".join)  # fmt: skip
PATH_ARG = st.builds(
    "{}{}<{}>{}".format, st.sampled_from(["FROM:", "TO:", "from: ", "FROM :", "TO:<"]),
    st.sampled_from(["", " "]), ADDRESS, PARAMS.map(lambda p: " " + p if p else ""),
) | LINE_TEXT  # fmt: skip
VERBS = ["HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "VRFY", "EXPN", "HELP",
         "AUTH PLAIN", "AUTH LOGIN", "AUTH CRAM-MD5", "STARTTLS", "BDAT 10", "XCLIENT",
         "ETRN", "TURN", ""]  # fmt: skip
COMMAND = st.builds(
    lambda verb, case, arg: (verb.lower() if case else verb) + (" " + arg if arg else ""),
    st.sampled_from(VERBS), st.booleans(), PATH_ARG,
) | LINE_TEXT  # fmt: skip

_REPLY_LINE = re.compile(rb"^[2-5][0-9][0-9][ -]")
_ENHANCED = re.compile(rb"^[45][0-9][0-9] [45]\.[0-9]{1,3}\.[0-9]{1,3}( |$)")


class Session:
    """A plain-socket SMTP client that keeps the raw reply lines."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""
        self.reply()  # the greeting

    def reply(self) -> list[bytes]:
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionResetError(b"closed after " + b"|".join(lines))
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line)
            if line[3:4] != b"-":
                return lines

    def command(self, line: bytes) -> list[bytes]:
        self.sock.sendall(line + b"\r\n")
        return self.reply()


def _check(lines: list[bytes]) -> None:
    for line in lines:
        assert _REPLY_LINE.match(line), lines
    if lines[-1][:1] in b"45":
        assert _ENHANCED.match(lines[-1]), lines


def test_any_command_line_gets_a_well_formed_reply(relay: RelayProcess) -> None:
    """RFC 5321 4.2, RFC 2034: whatever a client sends, one well-formed reply per line, an
    enhanced code on every refusal, and nothing that makes the relay log an internal error."""

    @BUDGET
    @given(st.lists(COMMAND, min_size=1, max_size=8))
    def session(commands: list[str]) -> None:
        client = Session(relay.config.submission_port)
        try:
            for command in commands:
                lines = client.command(command.encode("utf-8", "surrogateescape"))
                _check(lines)
                code = lines[-1][:3]
                if code == b"354":  # data after all: send a small message and its end
                    _check(client.command(b"Subject: x\r\n\r\nbody\r\n."))
                elif code == b"334":  # an AUTH exchange: abort it (RFC 4954 4)
                    _check(client.command(b"*"))
                elif code in (b"220", b"221", b"421"):  # TLS would start now, or the end
                    return
        finally:
            client.sock.close()

    session()
    assert "Traceback" not in relay.log()
    assert "unexpected error" not in relay.log()


@BUDGET
@given(PATH_ARG, st.sampled_from(["FROM:", "TO:"]))
def test_paths_parse_or_are_refused_cleanly(arg: str, keyword: str) -> None:
    """A MAIL or RCPT argument parses or raises AddressError, nothing else; what parses is
    a mailbox with no whitespace or control characters outside quotes."""
    try:
        path = parse_path(arg, keyword)
    except AddressError:
        return
    assert path.is_null or ("@" in path.address and path.domain)
    assert not any(c in path.address for c in "\r\n\x00")
    assert len(path.address) <= 256


@BUDGET
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=12))
def test_the_data_scan_in_pieces_finds_what_the_whole_has(data: bytes, cuts: list[int]) -> None:
    """DATA is scanned piece by piece as it is read: a CRLF split between two pieces is
    still one CRLF, so the answer is the whole message's (RFC 5321 2.3.8)."""
    scan = DataScan()
    start = 0
    for cut in [*sorted({min(c, len(data)) for c in cuts}), len(data)]:
        scan.feed(data[start:cut])
        start = cut
    assert scan.problem() is problem_in(data)


MIME_PIECES = st.sampled_from([
    b"--b\r\n", b"--b--\r\n", b"\r\n", b"Content-Type: multipart/mixed; boundary=b\r\n",
    b"Content-Type: multipart/alternative; boundary=\"b\"\r\n", b"Content-Type: text/plain\r\n",
    b"Content-Type: message/rfc822\r\n", b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n", b"text =C3=\r\n", b"aGVsbG8=\r\n",
    b"Content-Type: text/html; charset=x-unknown\r\n", b"<p>hi</p>\r\n", b"\xff\xfe\r\n",
    b"boundary=", b"--", b"Content-Disposition: attachment\r\n",
])  # fmt: skip


@BUDGET
@given(st.lists(MIME_PIECES, max_size=200).map(b"".join), st.integers(2, 40), st.integers(1, 6))
@example(body=b"--b\r\n\xff\xfe\r\n", max_parts=2, depth=1)  # 8-bit line in a part's head
def test_the_mime_walk_stays_within_its_limits(body: bytes, max_parts: int, depth: int) -> None:
    """P-SIZE at submission: any structure is walked without raising, no further than the
    limits, and says when it stopped at one."""
    raw = b"Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" + body
    started = time.perf_counter()
    reading = mime.read(raw, max_parts=max_parts, max_depth=depth)
    assert time.perf_counter() - started < 1.0
    assert reading.entities <= max_parts + 1
    assert reading.depth <= depth + 1
    assert reading.over in ("", "parts", "depth")


@BUDGET
@given(st.sampled_from(REPORTS), st.randoms(use_true_random=False))
def test_damaged_reports_are_read_or_refused_never_crash(sample: bytes, rng: random.Random) -> None:
    """ARF (RFC 5965), DSN (RFC 3464) and forwarded reports, damaged at random: each parser
    answers with a report or a problem, never from its last-resort handler."""
    data = mutate(rng, sample)
    arf = parse_arf(data)
    assert (arf.report is None) != (arf.problem is None)
    assert not (arf.problem or "").startswith("unreadable message")
    forwarded = parse_forwarded(data)
    assert not (forwarded.problem or "").startswith("unreadable message")
    bounce = parse_bounce(data)
    assert bounce.reports or bounce.problem
    assert not (bounce.problem or "").startswith("unreadable message")
