"""The one-click unsubscribe endpoint (RFC 8058, P-UNSUB-PROCESS) behind the signed URIs the
relay adds for tenants with `unsubscribe = "relay"` (`relay.feedback.privacy.unsubscribe`).

Mounted on the HTTP listener at the path of `[policy] unsubscribe_url` + `/{token}` (a
TLS-terminating proxy serves it under the https URL itself):

- POST with the body `List-Unsubscribe=One-Click` (RFC 8058 3.1; what a mailbox provider
  sends), or with no field at all: the recipient joins the tenant's suppression list at once
  (reason `unsubscribe`, source `one-click`) and an `unsubscribed` event is recorded, in one
  transaction; 200 with a short page. Unsubscribing again changes nothing and answers 200
  too, so a retried POST is harmless and counts once. An address erased earlier (P-ERASURE)
  is found by its keyed hash and not stored again.
- GET (and HEAD): a confirmation page whose button POSTs the same field, and nothing else:
  mail scanners and link previews fetch URLs, and RFC 8058 3.2 forbids acting on them.
- A forged, altered or malformed token: 403 for every method, and nothing changes.

Without a signing secret (`[policy] unsubscribe_secret_file` or RELAY_UNSUBSCRIBE_SECRET) or
without `unsubscribe_url`, the routes are not mounted, so those paths answer 404 (`relay
serve` refuses to start when a tenant needs them). The mount follows the configuration at
start; a changed `unsubscribe_url` path needs a restart, and links already sent keep
pointing at the old one.

Pages show no more than the token itself carries (tenant and address), are never cached and
never sent as a referrer. Logs name the tenant, never the address.
"""

import html
import logging
from urllib.parse import urlsplit

from aiohttp import web

from relay.config.schema import PolicySection
from relay.feedback.privacy.unsubscribe import BadToken, Unsubscribe, load_secret, verify
from relay.queue.database import Pool
from relay.queue.suppressions import SuppressionList, suppression_key

log = logging.getLogger(__name__)

FIELD, ONE_CLICK = "List-Unsubscribe", "One-Click"
# At the root of the host a catch-all segment would shadow every later one-segment route:
# there only the token's own shape (base64url payload "." base64url MAC) is claimed.
_ROOT_TOKEN = r"{token:[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+}"
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
}


def route_path(unsubscribe_url: str) -> str:
    """The route of the endpoint: the URL's path with `/{token}` as its last segment."""
    base = urlsplit(unsubscribe_url).path.rstrip("/")
    if not base:
        return "/" + _ROOT_TOKEN
    return base + "/{token}"


def add_routes(app: web.Application, pool: Pool, policy: PolicySection) -> str | None:
    """Mount the endpoint; the route path, or None when it is not configured."""
    if not policy.unsubscribe_url:
        return None
    secret = load_secret(policy.unsubscribe_secret_file)
    if secret is None:
        log.warning("[policy] unsubscribe_url is set but there is no secret: not mounted")
        return None
    endpoint = OneClick(pool, secret, int(policy.unsubscribe_lifetime // 86400))
    path = route_path(policy.unsubscribe_url)
    app.router.add_get(path, endpoint.confirm)
    app.router.add_post(path, endpoint.unsubscribe)
    return path


class OneClick:
    def __init__(self, pool: Pool, secret: bytes, lifetime_days: int) -> None:
        self.suppressions = SuppressionList(pool)
        self.secret = secret
        self.lifetime_days = lifetime_days

    def _request(self, request: web.Request) -> Unsubscribe | None:
        try:
            return verify(self.secret, request.match_info["token"], self.lifetime_days)
        except BadToken as exc:
            log.info("one-click unsubscribe refused: %s", exc)
            return None

    async def confirm(self, request: web.Request) -> web.Response:
        """GET: the page with the button; changes nothing (RFC 8058 3.2)."""
        wanted = self._request(request)
        if wanted is None:
            return _invalid()
        address, tenant = html.escape(wanted.recipient), html.escape(wanted.tenant)
        return _page(
            200,
            "Unsubscribe?",
            f"<p>Stop mail from {tenant} to {address}?</p>"
            f'<form method="post"><input type="hidden" name="{FIELD}" value="{ONE_CLICK}">'
            '<button type="submit">Unsubscribe</button></form>',
        )

    async def unsubscribe(self, request: web.Request) -> web.Response:
        """POST: suppress at once (P-UNSUB-PROCESS)."""
        wanted = self._request(request)
        if wanted is None:
            return _invalid()
        form = await request.post()
        if form.get(FIELD, ONE_CLICK) != ONE_CLICK:
            return _page(400, "Not understood", f"<p>Expected {FIELD}={ONE_CLICK}.</p>")
        added = await self._apply(wanted)  # an outage: 503 (relay.web.server)
        log.info("one-click unsubscribe tenant=%s new=%s", wanted.tenant, added)
        return _page(
            200,
            "You are unsubscribed",
            f"<p>{html.escape(wanted.recipient)} will get no more mail from "
            f"{html.escape(wanted.tenant)}.</p>",
        )

    async def _apply(self, wanted: Unsubscribe) -> bool:
        """Suppress and record the event in one transaction; False if already suppressed
        (by the address, or by its keyed hash after an erasure)."""
        recipient = wanted.recipient.lower()
        key = suppression_key(self.secret, recipient)
        return await self.suppressions.unsubscribe(wanted.tenant, recipient, key, wanted.message_id)


def _invalid() -> web.Response:
    """Why the token failed is not said: it would only help a forger."""
    return _page(403, "Invalid link", "<p>This unsubscribe link is not valid.</p>")


def _page(status: int, title: str, body: str) -> web.Response:
    text = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title></head>\n<body><main><h1>{title}</h1>{body}</main></body></html>\n"
    )
    return web.Response(status=status, text=text, content_type="text/html", headers=_HEADERS)
