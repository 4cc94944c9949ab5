"""The abuse desk's HTTP report form (P-ABUSE-DESK), at `/abuse` on the HTTP listener.

For people who cannot forward a message: they give their address and paste the message
with its headers (or just the headers). The report is stored as it came, in the same table
as reports mailed to the abuse address, and the feedback processor matches it to the
message by its trace headers (the relay's Received: id, the Message-ID), suppresses the
reporter for that tenant (when the message went to them) and counts a complaint. The page
is plain HTML with no scripts.

A form on the open web is a target: every page carries a token (its time, HMAC-signed with
a key of this process) that a POST must return within `TOKEN_LIFETIME`, so another site
cannot make its visitors' browsers post reports (a cross-site request forgery); and each
client address (as `[http] trusted_proxies` lets the relay see it) may post `PER_CLIENT`
reports per `WINDOW`, more get 429.
"""

import asyncio
import hashlib
import hmac
import html
import os
import time
from collections import defaultdict, deque

from aiohttp import web

from relay.mail.address import AddressError, parse_path
from relay.queue.database import Pool
from relay.queue.reports import ReportInbox
from relay.web.forwarded import client_address

MAX_REPORT = 1024 * 1024
TOKEN_LIFETIME = 2 * 3600.0
PER_CLIENT = 5
WINDOW = 600.0
_KEY = os.urandom(32)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Report abuse</title></head>
<body><h1>Report unwanted mail</h1>{notice}
<form method="post" action="/abuse">
<input type="hidden" name="token" value="{token}">
<p><label>Your email address<br><input type="email" name="email" required size="40"></label></p>
<p><label>The message you received, with its headers<br>
<textarea name="message" rows="20" cols="80" required></textarea></label></p>
<p><button type="submit">Send report</button></p>
</form></body></html>
"""


def token(now: float | None = None) -> str:
    issued = str(int(time.time() if now is None else now))
    return f"{issued}.{hmac.new(_KEY, issued.encode(), hashlib.sha256).hexdigest()}"


def _valid(value: str) -> bool:
    issued, _, signature = value.partition(".")
    expected = hmac.new(_KEY, issued.encode(), hashlib.sha256).hexdigest()
    if not issued.isdigit() or not hmac.compare_digest(signature, expected):
        return False
    return 0 <= time.time() - int(issued) <= TOKEN_LIFETIME


def _page(notice: str = "", status: int = 200) -> web.Response:
    body = _PAGE.format(
        notice=f"<p><strong>{html.escape(notice)}</strong></p>" if notice else "", token=token()
    )
    return web.Response(text=body, content_type="text/html", status=status)


def add_routes(app: web.Application, pool: Pool, wake: asyncio.Event) -> None:
    inbox = ReportInbox(pool)

    recent: defaultdict[str, deque[float]] = defaultdict(deque)

    def allowed(client: str) -> bool:
        now = time.monotonic()
        times = recent[client]
        while times and times[0] < now - WINDOW:
            times.popleft()
        if len(times) >= PER_CLIENT:
            return False
        times.append(now)
        if len(recent) > 10_000:  # forget idle clients
            for key in [k for k, v in recent.items() if not v or v[-1] < now - WINDOW]:
                del recent[key]
        return True

    async def show(_: web.Request) -> web.Response:
        return _page()

    async def submit(request: web.Request) -> web.Response:
        if (request.content_length or 0) > MAX_REPORT:
            return _page("The report is too large (1 MiB at most).", 413)
        form = await request.post()
        if not _valid(str(form.get("token", ""))):
            return _page("This form has expired or did not come from this site: reload it.", 403)
        client = client_address(request)
        if not allowed(client):
            return _page("Too many reports from your address; please try again later.", 429)
        email, text = str(form.get("email", "")).strip(), str(form.get("message", ""))
        try:
            reporter = parse_path(f"TO:<{email}>", "TO:").address.lower()
        except AddressError:
            return _page("Please give a valid email address.", 400)
        if not text.strip():
            return _page("Please paste the message you received.", 400)
        raw = (
            f"From: <{reporter}>\r\nSubject: report through the abuse form\r\n\r\n{text}"
        ).encode("utf-8", "replace")
        report_id = await inbox.store("abuse-form", "", [], client, raw, reporter)
        wake.set()
        return _page(f"Thank you. Your report was received as number {report_id}.")

    app.router.add_get("/abuse", show)
    app.router.add_post("/abuse", submit)
