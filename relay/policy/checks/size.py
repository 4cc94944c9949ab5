"""P-SIZE: lines no longer than RFC 5321 allows (DATA phase).

RFC 5321 4.5.3.1.6: a text line is at most 1000 octets with its CRLF. Receivers truncate,
fold or refuse longer lines, and a fold breaks the DKIM body hash, so a message with one is
refused before it is signed and queued; the sender's software should have encoded the
body (quoted-printable or base64 keep every line short). The message size and the
recipient count are checked earlier, in the SMTP dialogue (`relay.smtp.handler`).
"""

from relay.policy.context import PolicyContext
from relay.policy.verdict import Verdict

MAX_LINE = 998  # octets before the CRLF


class LineLength:
    rule = "P-SIZE"
    phase = "data"

    async def check(self, ctx: PolicyContext) -> Verdict:
        lines = ctx.raw.split(b"\n")
        if max(map(len, lines)) <= MAX_LINE + 1:  # + 1: the CR of the CRLF; C speed, where
            return Verdict.ok(self.rule, f"no line longer than {MAX_LINE} octets")  # re is slow
        line = next(i for i, text in enumerate(lines, 1) if len(text) > MAX_LINE + 1)
        return Verdict.reject(
            self.rule,
            f"line {line} of the message is longer than {MAX_LINE} octets (RFC 5321 "
            "4.5.3.1.6); encode the body as quoted-printable or base64",
            550,
            "5.6.0",
        )
