"""The abuse desk's HTTP report form (P-ABUSE-DESK), at `/abuse` on the HTTP listener.

For people who cannot forward a message: they give their address and paste the message
with its headers (or just the headers). The report is stored as it came, in the same table
as reports mailed to the abuse address, and the feedback processor matches it to the
message by its trace headers (the relay's Received: id, the Message-ID), suppresses the
reporter for that tenant and counts a complaint. The page is plain HTML with no scripts.
"""

import asyncio
import html

import asyncpg
from aiohttp import web

from relay.queue.sql import QUERIES
from relay.smtp.address import AddressError, parse_path

MAX_REPORT = 1024 * 1024

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Report abuse</title></head>
<body><h1>Report unwanted mail</h1>{notice}
<form method="post" action="/abuse">
<p><label>Your email address<br><input type="email" name="email" required size="40"></label></p>
<p><label>The message you received, with its headers<br>
<textarea name="message" rows="20" cols="80" required></textarea></label></p>
<p><button type="submit">Send report</button></p>
</form></body></html>
"""


def _page(notice: str = "", status: int = 200) -> web.Response:
    body = _PAGE.format(notice=f"<p><strong>{html.escape(notice)}</strong></p>" if notice else "")
    return web.Response(text=body, content_type="text/html", status=status)


def add_routes(app: web.Application, pool: asyncpg.Pool, wake: asyncio.Event) -> None:
    async def show(_: web.Request) -> web.Response:
        return _page()

    async def submit(request: web.Request) -> web.Response:
        if (request.content_length or 0) > MAX_REPORT:
            return _page("The report is too large (1 MiB at most).", 413)
        form = await request.post()
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
        report_id = await pool.fetchval(
            QUERIES["feedback_report_insert"], "abuse-form", "", [], request.remote, raw, reporter
        )
        wake.set()
        return _page(f"Thank you. Your report was received as number {report_id}.")

    app.router.add_get("/abuse", show)
    app.router.add_post("/abuse", submit)
