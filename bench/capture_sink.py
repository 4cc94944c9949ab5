"""A counting SMTP sink that records each message's Message-ID, and can refuse some.

    python -m bench.capture_sink --port PORT --ids FILE [--fail-every 3]

Postfix's smtp-sink counts messages but cannot say which ones arrived, nor refuse a share
of them; the fault runs need both: the Message-ID of every delivered message is appended to
FILE (one a line, flushed at once, so the bench reads progress while it runs), and with
`--fail-every N` every Nth message is answered `421` at the final dot, as a destination
that is overloaded would, so the server under test must retry it.
"""

import argparse
import asyncio
import re
import sys
from typing import IO

from aiosmtpd.smtp import SMTP, Envelope, Session

from relay.sink import make_sink_protocol

_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(\S+)", re.I | re.M)


class CaptureHandler:
    """aiosmtpd handler: record the Message-ID or answer 421 every `fail_every` messages."""

    def __init__(self, ids: IO[str], fail_every: int) -> None:
        self.ids = ids
        self.fail_every = fail_every
        self.seen = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.seen += 1
        if self.fail_every and self.seen % self.fail_every == 0:
            return "421 4.3.0 Overloaded, try again later"
        content = envelope.original_content or b""
        end = content.find(b"\r\n\r\n")
        match = _MESSAGE_ID.search(content[: end if end >= 0 else len(content)])
        self.ids.write((match.group(1).decode("ascii", "replace") if match else "-") + "\n")
        self.ids.flush()
        return "250 2.0.0 Ok"


async def serve(port: int, handler: CaptureHandler) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: make_sink_protocol(handler, hostname="capture.bench.localhost"),
        "127.0.0.1",
        port,
        backlog=1024,
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ids", required=True, help="file the Message-IDs are appended to")
    parser.add_argument("--fail-every", type=int, default=0, help="answer 421 to every Nth")
    args = parser.parse_args()
    with open(args.ids, "a", encoding="ascii") as ids:
        try:
            asyncio.run(serve(args.port, CaptureHandler(ids, args.fail_every)))
        except KeyboardInterrupt:
            sys.exit(0)


if __name__ == "__main__":
    main()
