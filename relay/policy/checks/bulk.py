"""What bulk mail must carry, and what no mail may carry, read from the text a recipient sees.

- P-CONSENT-NOTE: bulk mail says why the recipient gets it: the tenant's own sentence, a
  phrase of the `consent` data, or a sentence built of parts close together (within about
  fifteen words): "you are receiving this ..." followed by "because"; "because" followed
  by what the recipient did or is (an action: subscribed, signed up, registered, opted in,
  is a customer, created an account, asked to be told, is a member...); an action and
  "you are receiving this" in either order ("you signed up, so you get this"); or two
  different actions ("registered as a customer and agreed to ...");
- P-UNSUB: `List-Unsubscribe` with an https URI and `List-Unsubscribe-Post:
  List-Unsubscribe=One-Click` (RFC 2369, RFC 8058), and a visible unsubscribe link;
- P-NO-SERVICE-CONTACT: no message, bulk or not, shows the sending service's own contacts
  (`[policy] service_contacts`: addresses, or web sites by host name) as if they were the
  sender's.
Text comes from `relay.policy.reading` (every inline text part decoded, HTML rendered), so
an address hidden in an HTML comment or a base64 attachment does not count. P-IDENTITY
lives in `relay.policy.checks.identity`.
"""

import re
from urllib.parse import urlsplit

from relay.policy.context import PolicyContext
from relay.policy.reading import message_words, phrases, rendered
from relay.policy.verdict import Verdict
from relay.policy.words import skeleton

_ANGLE_URIS = re.compile(r"<([^<>]+)>")


class ConsentNote:
    rule = "P-CONSENT-NOTE"
    phase = "data"

    async def check(self, ctx: PolicyContext) -> Verdict:
        if not ctx.is_bulk:
            return Verdict.skip(self.rule, "transactional mail")
        own = ctx.tenant.identity.consent_statement if ctx.tenant.identity else ""
        if own and f" {skeleton(own)} " in message_words(ctx).skeleton:
            return Verdict.ok(self.rule, f"states why the recipient gets it: {own!r}")
        found = phrases(ctx)
        said = found.group("consent")
        if said:
            return Verdict.ok(self.rule, f"states why the recipient gets it: {said[0].text!r}")
        pair = (
            found.near("consent_receipt", "consent_because")
            or found.near("consent_because", "consent_action")
            or found.near("consent_action", "consent_receipt", either_order=True)
            or found.near("consent_action", "consent_action")
        )
        if pair:
            return Verdict.ok(
                self.rule,
                f"states why the recipient gets it: {pair[0].text!r} ... {pair[1].text!r}",
            )
        return Verdict.reject(
            self.rule,
            "bulk mail must say why the recipient gets it "
            "(e.g. 'You receive this because you subscribed at ...')",
        )


def _service_hosts(contacts: tuple[str, ...]) -> list[str]:
    hosts = []
    for contact in contacts:
        if "@" in contact:
            continue
        host = urlsplit(contact if "://" in contact else f"//{contact}").hostname or ""
        hosts.append(host.lower().removeprefix("www."))
    return [h for h in hosts if h]


def _written(host: str, text: str) -> bool:
    """`host` (or a subdomain of it) written in `text` as a name of its own: not inside a
    longer name (`relay.example.org`) and not as an address's domain (`@relay.example`)."""
    at = text.find(host)
    while at >= 0:
        before = text[at - 1] if at else " "
        after = text[at + len(host)] if at + len(host) < len(text) else " "
        if (
            before != "@"
            and not after.isalnum()
            and after not in "-_"
            and not (
                after == "."
                and at + len(host) + 1 < len(text)
                and text[at + len(host) + 1].isalnum()
            )
        ):
            return True
        at = text.find(host, at + 1)
    return False


def _within(host: str, service: str) -> bool:
    host = host.lower().rstrip(".").removeprefix("www.")
    return host == service or host.endswith("." + service)


class NoServiceContact:
    rule = "P-NO-SERVICE-CONTACT"
    phase = "data"

    async def check(self, ctx: PolicyContext) -> Verdict:
        if not ctx.service_contacts:
            return Verdict.skip(self.rule, "no service contacts configured")
        shown = rendered(ctx)
        text = shown.text.casefold()
        links = [link.casefold() for link in shown.links]
        for address in (c.casefold() for c in ctx.service_contacts if "@" in c):
            if address in text or any(address in link for link in links):
                return self._refuse(address)
        linked = [urlsplit(link).hostname or "" for link in links if "://" in link]
        for host in _service_hosts(ctx.service_contacts):
            if any(_within(h, host) for h in linked) or _written(host, text):
                return self._refuse(host)
        return Verdict.ok(self.rule, "no contact of the sending service in the message")

    def _refuse(self, contact: str) -> Verdict:
        return Verdict.reject(
            self.rule,
            f"the message shows the sending service's own contact {contact!r}; "
            "give the tenant's own",
        )


def _same_targets(uris: list[str], links: tuple[str, ...]) -> str | None:
    """A link of the text to the List-Unsubscribe URI (scheme, host and path alike): the
    visible unsubscribe link, whatever its words."""

    def target(uri: str) -> tuple[str, str]:
        parts = urlsplit(uri.strip())
        return (parts.hostname or "").lower(), parts.path.rstrip("/")

    wanted = {target(u) for u in uris}
    return next((link for link in links if "://" in link and target(link) in wanted), None)


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
        post = " ".join(" ".join(ctx.headers("List-Unsubscribe-Post")).split()).casefold()
        if post != "list-unsubscribe=one-click":
            return Verdict.reject(
                self.rule,
                "bulk mail needs List-Unsubscribe-Post: List-Unsubscribe=One-Click (RFC 8058)",
            )
        links = rendered(ctx).links
        same = _same_targets([u for u in uris if u.strip().lower().startswith("https://")], links)
        if same:
            return Verdict.ok(self.rule, f"one-click List-Unsubscribe, linked in the text: {same}")
        said = phrases(ctx).group("unsubscribe")
        if not said or not links:
            return Verdict.reject(self.rule, "bulk mail needs a visible unsubscribe link")
        return Verdict.ok(
            self.rule, f"one-click List-Unsubscribe and a visible link ({said[0].text!r})"
        )

    def _relay_adds(self, ctx: PolicyContext) -> Verdict:
        """The relay's own signed URI names one recipient, so it needs a message per
        recipient (as bulk senders send anyway)."""
        if len(ctx.recipients) != 1:
            return Verdict.reject(
                self.rule,
                "the relay adds its one-click unsubscribe URI to single-recipient messages "
                f"only; send bulk mail one recipient per message ({len(ctx.recipients)} here)",
            )
        if not rendered(ctx).links:
            return Verdict.reject(self.rule, "bulk mail needs a visible unsubscribe link")
        ctx.add_unsubscribe = True
        return Verdict.ok(self.rule, "the relay adds its signed one-click List-Unsubscribe")
