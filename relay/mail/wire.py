"""A message on the wire as bytes: check line endings, undo and do dot-stuffing.

Only CRLF.CRLF ends the data (RFC 5321 4.1.1.4, 2.3.8). Servers that also accepted
`<LF>.<LF>` or `<LF>.<CRLF>` let an attacker smuggle a second message past the first one's
checks (CVE-2023-51764 Postfix, CVE-2024-27305 aiosmtpd); here any other sequence is plain
data, and a lone CR or LF is refused or, on a listener that asks for it, normalised to CRLF
after the end has been found, so normalising can never create an end marker.
"""

import re
from enum import Enum

LARGE_MESSAGE = 1 << 20
"""From this size on the work on a message yields to other sessions between its large
steps and does its long scans in a thread (receiving: the copies, the policy checks, the
signature; delivering: the dot-stuffing). A 24 MB message otherwise held the event loop
for long stretches while other sessions waited."""

_ANY_NEWLINE = re.compile(rb"\r\n|\r|\n")


class DataProblem(Enum):
    """Why the data cannot be accepted as it is."""

    NUL = "NUL"
    BARE_NEWLINE = "bare CR or LF"


class DataScan:
    """What `problem_in` finds, for data that arrives in pieces: each piece is scanned as
    it is read, so a large message costs no scan of its own after its end, during which
    no other session would be answered."""

    def __init__(self) -> None:
        self.nul = False
        self.cr = self.lf = self.pairs = 0
        self._ends_in_cr = False

    def feed(self, piece: bytes) -> None:
        if not piece:
            return
        self.nul = self.nul or b"\x00" in piece
        self.cr += piece.count(b"\r")
        self.lf += piece.count(b"\n")
        self.pairs += piece.count(b"\r\n") + (self._ends_in_cr and piece[:1] == b"\n")
        self._ends_in_cr = piece[-1:] == b"\r"

    def problem(self) -> DataProblem | None:
        """The first reason the data must be refused, if any (RFC 5321 2.3.8, 4.1.1.4)."""
        if self.nul:
            return DataProblem.NUL
        if self.cr != self.pairs or self.lf != self.pairs:  # a CR or LF outside a CRLF
            return DataProblem.BARE_NEWLINE
        return None


def problem_in(data: bytes) -> DataProblem | None:
    """The first reason the data must be refused, if any (RFC 5321 2.3.8, 4.1.1.4)."""
    scan = DataScan()
    scan.feed(data)
    return scan.problem()


def has_bare_newline(data: bytes) -> bool:
    """Every CRLF holds one CR and one LF: any other CR or LF is bare. Three counts in C
    instead of a regular expression with a look-behind, which is far slower."""
    pairs = data.count(b"\r\n")
    return data.count(b"\r") != pairs or data.count(b"\n") != pairs


def normalize_newlines(data: bytes) -> bytes:
    """Turn every bare CR or bare LF into CRLF, for listeners configured to accept them."""
    return _ANY_NEWLINE.sub(b"\r\n", data)


def unstuff(data: bytes) -> bytes:
    """Remove the transparency dot that starts a line (RFC 5321 4.5.2).

    `data` is the message with its final CRLF and without the end marker's `.\\r\\n`.
    """
    data = data.replace(b"\r\n.", b"\r\n")
    return data[1:] if data.startswith(b".") else data


def stuff(data: bytes) -> bytes:
    """The message as sent after DATA is answered 354 (RFC 5321 4.5.2): CRLF line endings,
    a transparency dot before every line that starts with one, the end marker `.\\r\\n`.

    What the outbound client sends is stored with CRLF endings already, so this costs a few
    C-speed scans, where aiosmtplib's own DATA runs two regular expressions over the whole
    text, which costs far more."""
    if has_bare_newline(data):
        data = normalize_newlines(data)
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"
