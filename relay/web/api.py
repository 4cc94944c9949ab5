"""The tenants' HTTP API, on the relay's HTTP listener: consent records (P-CONSENT-RECORD).

- `POST /v1/consent`: one record (a JSON object with the fields of `relay consent import`'s
  CSV) or many (`{"records": [...]}`, at most 10,000). Answers 200 with the number stored and
  each refused record's index and reason, as the CSV import does; a record that cannot prove
  consent is refused, never stored half.
- `GET /v1/consent/{address}`: the tenant's record of one address, or 404.

Tenants authenticate with HTTP Basic (RFC 7617) and their SMTP credentials, through the
same checker as SMTP AUTH: same argon2 hashes, same failure delay and lockout (answered
429), per client address as `[http] trusted_proxies` lets the relay see it. Use it over
TLS only: put the listener behind a TLS-terminating proxy that exposes `/v1/` (and keeps
`/metrics` private), and name the proxy in `[http] trusted_proxies`.
"""

import binascii
import json
from base64 import b64decode
from typing import Any

from aiohttp import web

from relay.auth import Authenticator, LockedOut
from relay.policy import consent_records
from relay.queue.consent import ConsentStore
from relay.queue.database import Pool
from relay.web.forwarded import client_address

MAX_RECORDS = 10_000


def _credentials(request: web.Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        username, sep, password = b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (username, password) if sep else None


def _problem(status: int, detail: str, **headers: str) -> web.Response:
    return web.json_response({"error": detail}, status=status, headers=headers)


async def _tenant_of(request: web.Request, authenticator: Authenticator) -> str | web.Response:
    """The authenticated tenant's name, or the response that refuses the request."""
    credentials = _credentials(request)
    challenge = {"WWW-Authenticate": 'Basic realm="relay", charset="UTF-8"'}
    if credentials is None:
        return _problem(401, "HTTP Basic credentials of a tenant are required", **challenge)
    try:
        tenant = await authenticator.authenticate(*credentials, client_address(request))
    except LockedOut:
        return _problem(429, "too many failed logins; try again later")
    if tenant is None:
        return _problem(401, "invalid credentials", **challenge)
    return tenant


def add_routes(app: web.Application, pool: Pool, authenticator: Authenticator) -> None:
    consent = ConsentStore(pool)

    async def post_consent(request: web.Request) -> web.Response:
        tenant = await _tenant_of(request, authenticator)
        if isinstance(tenant, web.Response):
            return tenant
        try:
            body: Any = await request.json()
        except json.JSONDecodeError as exc:
            return _problem(400, f"the body is not JSON: {exc}")
        rows = body.get("records") if isinstance(body, dict) and "records" in body else [body]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            return _problem(400, 'send one record object, or {"records": [objects]}')
        if len(rows) > MAX_RECORDS:
            return _problem(413, f"at most {MAX_RECORDS} records per request")
        records, refused = [], []
        for index, row in enumerate(rows):
            try:
                records.append(consent_records.parse_record(row))
            except ValueError as exc:
                refused.append({"index": index, "address": row.get("address"), "reason": str(exc)})
        await consent.store(tenant, records)
        return web.json_response({"tenant": tenant, "stored": len(records), "refused": refused})

    async def get_consent(request: web.Request) -> web.Response:
        tenant = await _tenant_of(request, authenticator)
        if isinstance(tenant, web.Response):
            return tenant
        address = request.match_info["address"]
        record = await consent.show(tenant, address)
        if record is None:
            return _problem(404, f"no consent record of {address} for {tenant}")
        return web.json_response(record, dumps=lambda v: json.dumps(v, default=str))

    app.router.add_post("/v1/consent", post_consent)
    app.router.add_get("/v1/consent/{address}", get_consent)
