"""P-SUBJECT: bulk mail must not mislead with its subject (DATA phase).

An empty subject, or a reply or forward prefix (`Re:`, `Fwd:` and their equivalents in the
common languages) on a message that answers nothing (no In-Reply-To, no References) is a
classic trick to get a newsletter opened; transactional mail is not judged here.
"""

import re

from relay.policy.context import PolicyContext
from relay.policy.verdict import Verdict

REPLY_PREFIXES = (
    "re", "fw", "fwd", "aw", "wg", "sv", "vs", "vb", "antw", "doorst", "rv", "enc", "tr",
    "rif", "r", "odp", "pd", "fs", "ynt", "ilt", "odg", "ats", "πρθ", "σχετ", "ответ", "пересл",
    "回复", "回覆", "转发", "轉寄", "答复", "転送", "返信", "회신", "전달",
)  # fmt: skip
"""Reply and forward markers of mail clients in English, German, Nordic, Dutch, Spanish,
Portuguese, French, Italian, Polish, Czech, Turkish, Greek, Russian, Chinese, Japanese and
Korean."""

_PREFIX = re.compile(
    r"^\s*(?:\[[^\]]*\]\s*)?("
    + "|".join(re.escape(p) for p in REPLY_PREFIXES)
    + r")\s*(\[\d+\])?\s*[:\uff1a]",  # ASCII or fullwidth colon
    re.IGNORECASE,
)


class MisleadingSubject:
    rule = "P-SUBJECT"
    phase = "data"

    async def check(self, ctx: PolicyContext) -> Verdict:
        if not ctx.is_bulk:
            return Verdict.skip(self.rule, "transactional mail")
        subjects = ctx.decoded("Subject")
        subject = subjects[0].strip() if subjects else ""
        if not subject:
            return Verdict.reject(self.rule, "bulk mail needs a non-empty Subject")
        match = _PREFIX.match(subject)
        answers = ctx.headers("In-Reply-To") or ctx.headers("References")
        if match and not answers:
            return Verdict.reject(
                self.rule,
                f"bulk Subject starts with {match.group(1)!r}: but the message replies to "
                "nothing (no In-Reply-To or References)",
            )
        return Verdict.ok(self.rule, "the Subject does not pose as a reply or forward")
