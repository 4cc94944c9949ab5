"""What the text rules read of one message, made once and shared by every check.

`mime`: the message's structure, walked within its limits (`relay.policy.mime`);
`rendered`: the inline text parts decoded and HTML rendered
(`relay.policy.render`); `phrases`: every phrase of the phrase data found in the Subject and
that text (`relay.policy.phrasebook`). They are kept in the context's `readings`, so the
checks that need them (P-IDENTITY, P-CONSENT-NOTE, P-UNSUB, P-NO-SERVICE-CONTACT,
P-CONTENT) pay for them once, and transactional mail that none of the bulk checks reads
pays only for what P-CONTENT and P-NO-SERVICE-CONTACT need.
"""

from collections.abc import Iterable

from relay.policy.context import PolicyContext
from relay.policy.mime import Reading, read
from relay.policy.phrasebook import Found, shipped
from relay.policy.render import Rendered, render
from relay.policy.words import MessageWords


def mime(ctx: PolicyContext) -> Reading:
    """The message's MIME structure, walked within the context's limits."""
    if ctx.readings.mime is None:
        ctx.readings.mime = read(ctx.raw, ctx.max_mime_parts, ctx.max_mime_depth)
    return ctx.readings.mime


def rendered(ctx: PolicyContext) -> Rendered:
    if ctx.readings.rendered is None:
        ctx.readings.rendered = render(mime(ctx).parts)
    return ctx.readings.rendered


def subject(ctx: PolicyContext) -> str:
    return " ".join(ctx.decoded("Subject"))


def message_words(ctx: PolicyContext) -> MessageWords:
    """The words of the Subject and the visible text (`relay.policy.words`)."""
    if ctx.readings.words is None:
        ctx.readings.words = shipped().words(f"{subject(ctx)}\n{rendered(ctx).text}")
    return ctx.readings.words


def phrases(ctx: PolicyContext) -> Found:
    """Phrases of the shipped data in the Subject and the visible text."""
    if ctx.readings.phrases is None:
        ctx.readings.phrases = shipped().find(message_words(ctx))
    return ctx.readings.phrases


def prepare(countries: Iterable[str]) -> None:
    """Build what the text rules load once per process (the phrase data's automata, the
    tenants' country names: ~0.2 s and ~0.6 s) before the first message, not during it."""
    from relay.policy.checks.identity import country_names

    shipped()
    for code in countries:
        country_names(code)
