"""P-SIZE: lines no longer than RFC 5321 allows, and a MIME structure of bounded size (DATA).

RFC 5321 4.5.3.1.6: a text line is at most 1000 octets with its CRLF. Receivers truncate,
fold or refuse longer lines, and a fold breaks the DKIM body hash, so a message with one is
refused before it is signed and queued; the sender's software should have encoded the
body (quoted-printable or base64 keep every line short). The message size and the
recipient count are checked earlier, in the SMTP dialogue (`relay.smtp.handler`).

A message of tens of thousands of MIME parts, or of parts nested hundreds deep, is built to
exhaust whoever parses it, and no mail client shows it as such: more entities than `[smtp]
max_mime_parts` or deeper nesting than `max_mime_depth` is refused with `554 5.6.0`, after
looking at no more than that (`relay.policy.mime`), so the session's CPU stays bounded.
"""

from relay.policy.context import PolicyContext
from relay.policy.reading import mime
from relay.policy.verdict import Verdict

MAX_LINE = 998  # octets before the CRLF
_BLOCK = (MAX_LINE + 2) // 2
"""Any run of MAX_LINE + 2 octets without a LF (a line too long, with its CR) covers a whole
block of this size that starts at a multiple of it (a run of 2 * _BLOCK - 1 octets always
does), so a message with a LF in every such block has no line too long."""


def every_block_has_newline(raw: bytes) -> bool:
    """True when no aligned block of `_BLOCK` octets lacks a LF: one `find` per block,
    which stops at the block's first LF (some 80 octets into it in most mail), where
    splitting the message into lines to measure them read and copied all of it."""
    return all(
        raw.find(b"\n", start, start + _BLOCK) >= 0
        for start in range(0, len(raw) - _BLOCK + 1, _BLOCK)
    )


class LineLength:
    rule = "P-SIZE"
    phase = "data"

    async def check(self, ctx: PolicyContext) -> Verdict:
        raw = ctx.raw
        if every_block_has_newline(raw):
            return Verdict.ok(self.rule, f"no line longer than {MAX_LINE} octets")
        lines = raw.split(b"\n")
        too_long = [i for i, text in enumerate(lines, 1) if len(text) > MAX_LINE + 1]  # + CR
        if not too_long:
            return Verdict.ok(self.rule, f"no line longer than {MAX_LINE} octets")
        return Verdict.reject(
            self.rule,
            f"line {too_long[0]} of the message is longer than {MAX_LINE} octets (RFC 5321 "
            "4.5.3.1.6); encode the body as quoted-printable or base64",
            550,
            "5.6.0",
        )


class MimeStructure:
    rule = "P-SIZE"
    phase = "data"

    async def check(self, ctx: PolicyContext) -> Verdict:
        reading = mime(ctx)
        if reading.over == "parts":
            return Verdict.reject(
                self.rule,
                f"the message has more than {ctx.max_mime_parts} MIME parts; send fewer "
                "attachments, or a link to them",
                554,
                "5.6.0",
            )
        if reading.over == "depth":
            return Verdict.reject(
                self.rule,
                f"the message nests MIME parts more than {ctx.max_mime_depth} levels deep",
                554,
                "5.6.0",
            )
        return Verdict.ok(self.rule, f"{reading.entities} MIME parts, nested {reading.depth} deep")
