"""The DATA phase read from the stream, in pieces, with the size limit and the process's
budget of data in flight applied as it arrives (RFC 5321 4.1.1.4, 4.2.5)."""

import asyncio

from relay.mail.wire import DataScan
from relay.smtp import replies
from relay.smtp.budget import Held

_END_OF_LINE_DOT = b".\r\n"


async def read_data(
    reader: asyncio.StreamReader, limit: int, held: Held, scan: DataScan
) -> tuple[bytes, str | None]:
    """Read up to the end marker; return the data with its last CRLF, and the refusal
    if it passed the size limit or the process's data budget. `scan` sees every piece
    kept.

    Reads in pieces of up to 64 KiB that end at `.\\r\\n`; a piece ends the data only
    when that dot starts a line (the two bytes before it are CRLF, the CRLF of the DATA
    command line counting for an empty message). What follows the end stays in the
    reader for the next pipelined command. Past a limit, data is read and dropped so
    the refusal comes after the client has finished (RFC 5321 4.2.5).
    """
    pieces: list[bytes] = []
    size = 0
    refusal: str | None = None
    before = b"\r\n"
    while True:
        try:
            piece = await reader.readuntil(_END_OF_LINE_DOT)
            found = True
        except asyncio.LimitOverrunError as exc:
            piece = await reader.read(exc.consumed)
            found = False
        # the two octets before the dot
        last = found and (before + piece[-5:-3])[-2:] == b"\r\n"
        if last:
            piece = piece[:-3]
        before = (before + piece[-2:])[-2:]
        size += len(piece)
        if refusal is None:
            if size > limit:
                refusal = replies.MESSAGE_TOO_BIG.format(limit=limit)
            elif not held.take(len(piece)):
                refusal = replies.DATA_BUDGET_FULL
            if refusal is not None:
                pieces.clear()
                held.release()
            else:
                pieces.append(piece)
                scan.feed(piece)
        if last:
            return b"".join(pieces), refusal
