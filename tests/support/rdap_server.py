"""A real RDAP service on loopback, shaped like the registries' and registrars' (RFC 9082,
RFC 9083): the IANA-style bootstrap file at `/dns.json`, a thin registry at `/registry/` that
links each domain to the registrar's service (as Verisign does for .com), and the
registrar at `/registrar/` that answers with the registrant. Answers come from
`tests/samples/rdap/*.json`.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "rdap"
RDAP = "application/rdap+json"


def sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text())
    return data


class RdapServer:
    """Serves `domains` (domain -> sample name) through a thin registry and a registrar;
    `down` makes every answer a 503, `requests` lists the paths asked."""

    def __init__(self, domains: dict[str, str], tlds: tuple[str, ...] = ("example",)) -> None:
        self.domains = dict(domains)
        self.tlds = tlds
        self.down = False
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def bootstrap(self) -> dict[str, Any]:
        return {
            "description": "RDAP bootstrap file for Domain Name System registrations",
            "publication": "2026-11-01T00:00:00Z",
            "version": "1.0",
            "services": [[list(self.tlds), [f"{self.base_url}registry/"]]],
        }

    def _answer(self, path: str) -> tuple[int, dict[str, Any]]:
        if path == "/dns.json":
            return 200, self.bootstrap()
        if self.down:
            return 503, {"errorCode": 503, "title": "Service Unavailable"}
        where, _, name = path.strip("/").partition("/domain/")
        name = name.lower()
        if name not in self.domains or where not in ("registry", "registrar"):
            return 404, {
                "errorCode": 404,
                "title": "Not Found",
                "rdapConformance": ["rdap_level_0"],
            }
        if where == "registrar":
            return 200, sample(self.domains[name])
        return 200, {  # a thin registry: no contacts, a link to the registrar's answer
            "objectClassName": "domain",
            "ldhName": name.upper(),
            "status": ["client transfer prohibited"],
            "links": [
                {"value": f"{self.base_url}registry/domain/{name}", "rel": "self",
                 "href": f"{self.base_url}registry/domain/{name}", "type": RDAP},
                {"value": f"{self.base_url}registry/domain/{name}", "rel": "related",
                 "href": f"{self.base_url}registrar/domain/{name}", "type": RDAP},
            ],
            "entities": [{"objectClassName": "entity", "handle": "146", "roles": ["registrar"]}],
            "rdapConformance": ["rdap_level_0"],
        }  # fmt: skip

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                status, body = server._answer(self.path)
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", RDAP)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "RdapServer":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
