"""What the text rules read of one message, made once and shared by every check.

`mime`: the message's structure, walked within its limits (`relay.policy.mime`);
`rendered`: the inline text parts decoded and HTML rendered
(`relay.policy.render`); `phrases`: every phrase of the phrase data found in the Subject and
that text (`relay.policy.phrasebook`). Both are kept in the context's `extras`, so the
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
    cached = ctx.extras.get("mime")
    if not isinstance(cached, Reading):
        cached = ctx.extras["mime"] = read(ctx.raw, ctx.max_mime_parts, ctx.max_mime_depth)
    return cached


def rendered(ctx: PolicyContext) -> Rendered:
    cached = ctx.extras.get("rendered")
    if not isinstance(cached, Rendered):
        cached = ctx.extras["rendered"] = render(mime(ctx).parts)
    return cached


def subject(ctx: PolicyContext) -> str:
    return " ".join(ctx.decoded("Subject"))


def message_words(ctx: PolicyContext) -> MessageWords:
    """The words of the Subject and the visible text (`relay.policy.words`)."""
    cached = ctx.extras.get("words")
    if not isinstance(cached, MessageWords):
        cached = ctx.extras["words"] = shipped().words(f"{subject(ctx)}\n{rendered(ctx).text}")
    return cached


def phrases(ctx: PolicyContext) -> Found:
    """Phrases of the shipped data in the Subject and the visible text."""
    cached = ctx.extras.get("phrases")
    if not isinstance(cached, Found):
        cached = ctx.extras["phrases"] = shipped().find(message_words(ctx))
    return cached


def prepare(countries: Iterable[str]) -> None:
    """Build what the text rules load once per process (the phrase data's automata, the
    tenants' country names: ~0.2 s and ~0.6 s) before the first message, not during it."""
    from relay.policy.checks.identity import country_names

    shipped()
    for code in countries:
        country_names(code)
