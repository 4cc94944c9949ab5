"""What bulk mail must carry, read from the text a recipient sees (DATA phase).

- P-IDENTITY: the sender's full name, postal address and contact email (the tenant's
  configured `identity`) appear in the message text (CAN-SPAM, e-Commerce Directive art. 5);
- P-CONSENT-NOTE: the text says why the recipient gets the message;
- P-NO-SERVICE-CONTACT: the sending service's own contacts (`[policy] service_contacts`)
  do not appear, as if they were the sender's;
- P-UNSUB: `List-Unsubscribe` with an https URI and `List-Unsubscribe-Post:
  List-Unsubscribe=One-Click` (RFC 2369, RFC 8058), and an unsubscribe link in the body.
Text comes from `visible_text` (text/plain and text/html parts, decoded, tags stripped), so
an address hidden in an HTML comment or a base64 attachment does not count. Comparisons
ignore case and runs of whitespace, since HTML and mail clients re-wrap text freely.
Transactional mail is exempt from all four.
"""

import re
from functools import cached_property

from relay.policy.checks.text import Rendered, render
from relay.policy.context import PolicyContext
from relay.policy.verdict import Verdict

CONSENT_PATTERNS = (
    r"you (?:are )?receiv\w* (?:this|these|our)",
    r"you (?:have )?(?:subscribed|signed up|opted in|registered)",
    r"because you (?:subscribed|signed up|opted in|registered|asked|are a customer)",
    r"(?:sie|du) erh(?:a|ä)ltst? diese",
    r"weil (?:sie|du) sich .{0,40}angemeldet",
    r"vous recevez (?:ce|cet|cette)",
    r"(?:recibes|recibe) este",
    r"ricevi questa",
    r"u ontvangt deze",
)
"""How senders say why the recipient gets a newsletter, in the common languages."""

UNSUBSCRIBE_WORDS = (
    "unsubscribe", "opt out", "opt-out", "abmelden", "abbestellen", "désabonner",
    "desabonner", "désinscri", "darse de baja", "darte de baja", "cancelar suscripción",
    "annulla iscrizione", "disiscriviti", "afmelden", "uitschrijven", "avregistrera",
    "wypisz", "manage preferences", "email preferences",
)  # fmt: skip

_CONSENT = re.compile("|".join(CONSENT_PATTERNS), re.IGNORECASE)
_ANGLE_URIS = re.compile(r"<([^<>]+)>")


def _squash(text: str) -> str:
    return " ".join(text.split()).casefold()


class _BulkText:
    """The parts of a bulk message the checks read, computed once per message."""

    def __init__(self, ctx: PolicyContext) -> None:
        self.ctx = ctx

    @cached_property
    def rendered(self) -> Rendered:
        return render(self.ctx.message)

    @cached_property
    def text(self) -> str:
        return self.rendered.text.casefold()

    @property
    def links(self) -> list[str]:
        return self.rendered.links


def folded_text(ctx: PolicyContext) -> str:
    """The message's visible text, rendered, whitespace collapsed and casefolded once per
    message for every check that matches words in it."""
    return _bulk_text(ctx).text


def _bulk_text(ctx: PolicyContext) -> _BulkText:
    cached = ctx.extras.get("bulk_text")
    if not isinstance(cached, _BulkText):
        cached = ctx.extras["bulk_text"] = _BulkText(ctx)
    return cached


class SenderIdentity:
    rule = "P-IDENTITY"
    phase = "data"

    async def check(self, ctx: PolicyContext) -> Verdict:
        if not ctx.is_bulk:
            return Verdict.skip(self.rule, "transactional mail")
        identity = ctx.tenant.identity
        if identity is None:
            return Verdict.reject(
                self.rule, f"tenant {ctx.tenant.name} has no identity configured for bulk mail"
            )
        text = _bulk_text(ctx).text
        missing = [
            label
            for label, value in (
                ("name", identity.name),
                ("postal address", identity.postal_address),
                ("contact email", identity.contact_email),
            )
            if _squash(value) not in text
        ]
        if missing:
            return Verdict.reject(
                self.rule, f"bulk mail must show the sender's {', '.join(missing)} in its text"
            )
        return Verdict.ok(self.rule, "name, postal address and contact email are shown")


class ConsentNote:
    rule = "P-CONSENT-NOTE"
    phase = "data"

    async def check(self, ctx: PolicyContext) -> Verdict:
        if not ctx.is_bulk:
            return Verdict.skip(self.rule, "transactional mail")
        text = _bulk_text(ctx).text
        own = ctx.tenant.identity.consent_statement if ctx.tenant.identity else ""
        match = _CONSENT.search(text)
        if (own and _squash(own) in text) or match:
            found = own if own and _squash(own) in text else match.group(0)  # type: ignore[union-attr]
            return Verdict.ok(self.rule, f"states why the recipient gets it: {found!r}")
        return Verdict.reject(
            self.rule,
            "bulk mail must say why the recipient gets it "
            "(e.g. 'You receive this because you subscribed at ...')",
        )


class NoServiceContact:
    rule = "P-NO-SERVICE-CONTACT"
    phase = "data"

    async def check(self, ctx: PolicyContext) -> Verdict:
        contacts = [c.casefold() for c in ctx.service_contacts]
        if not contacts:
            return Verdict.skip(self.rule, "no service contacts configured")
        if not ctx.is_bulk:
            return Verdict.skip(self.rule, "transactional mail")
        bulk = _bulk_text(ctx)
        haystack = bulk.text + " " + " ".join(bulk.links).casefold()
        for contact in contacts:
            if contact in haystack:
                return Verdict.reject(
                    self.rule,
                    f"the message shows the sending service's own contact {contact!r}; "
                    "give the tenant's own",
                )
        return Verdict.ok(self.rule, "no contact of the sending service in the message")


class OneClickUnsubscribe:
    rule = "P-UNSUB"
    phase = "data"

    async def check(self, ctx: PolicyContext) -> Verdict:
        if not ctx.is_bulk:
            return Verdict.skip(self.rule, "transactional mail")
        header = " ".join(ctx.headers("List-Unsubscribe"))
        uris = _ANGLE_URIS.findall(header)
        if not header and ctx.tenant.unsubscribe == "relay":
            return self._relay_adds(ctx)
        if not any(u.strip().lower().startswith("https://") for u in uris):
            return Verdict.reject(
                self.rule, "bulk mail needs List-Unsubscribe with an https URI (RFC 2369, 8058)"
            )
        post = _squash(" ".join(ctx.headers("List-Unsubscribe-Post")))
        if post != "list-unsubscribe=one-click":
            return Verdict.reject(
                self.rule,
                "bulk mail needs List-Unsubscribe-Post: List-Unsubscribe=One-Click (RFC 8058)",
            )
        bulk = _bulk_text(ctx)
        visible = any(w in bulk.text for w in UNSUBSCRIBE_WORDS) and bool(bulk.links)
        if not visible:
            return Verdict.reject(self.rule, "bulk mail needs a visible unsubscribe link")
        return Verdict.ok(self.rule, "one-click List-Unsubscribe and a visible link")

    def _relay_adds(self, ctx: PolicyContext) -> Verdict:
        """The relay's own signed URI names one recipient, so it needs a message per
        recipient (as bulk senders send anyway)."""
        if len(ctx.recipients) != 1:
            return Verdict.reject(
                self.rule,
                "the relay adds its one-click unsubscribe URI to single-recipient messages "
                f"only; send bulk mail one recipient per message ({len(ctx.recipients)} here)",
            )
        if not _bulk_text(ctx).links:
            return Verdict.reject(self.rule, "bulk mail needs a visible unsubscribe link")
        ctx.extras["add_unsubscribe"] = True
        return Verdict.ok(self.rule, "the relay adds its signed one-click List-Unsubscribe")
