"""The outbound client against scripted SMTP servers on loopback (RFC 2920, RFC 5321 4.2).

Each server is a real TCP peer that answers only what its script says, so the order and the
grouping of what the client writes are seen as a server sees them: a client that waited for
each reply before writing the next command would never get past a pipelining server that
answers only once it has the whole group.
"""

import asyncio
from collections.abc import Awaitable, Callable

import aiosmtplib
import pytest

from relay.delivery.transaction import Connection, Envelope, TlsPolicy

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
TEXT = b"Subject: hi\r\n\r\n.starts with a dot\r\nend\r\n"


async def _run(
    script: Script, pipelining: bool, send: Callable[[Connection], Awaitable[None]]
) -> None:
    """Serve one connection with `script` after the greeting and EHLO; run `send` on the
    client's connection; fail on whatever the script asserted."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"220 scripted ESMTP\r\n")
            assert (await reader.readline()).startswith(b"EHLO ")
            extensions = b"250-PIPELINING\r\n" if pipelining else b""
            writer.write(b"250-scripted\r\n" + extensions + b"250 8BITMIME\r\n")
            await script(reader, writer)
            done.set_result(None)
        except BaseException as exc:
            done.set_exception(exc)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        connection = await Connection.open(
            "scripted.example", "127.0.0.1", port, helo="relay.test",
            tls=TlsPolicy("none", verify=False), connect_timeout=5, command_timeout=2,
        )  # fmt: skip
        try:
            await send(connection)
        finally:
            await connection.close()
        await asyncio.wait_for(done, 5)


async def _quit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    assert await reader.readline() == b"QUIT\r\n"
    writer.write(b"221 bye\r\n")


@pytest.mark.asyncio
async def test_mail_rcpts_and_data_go_out_in_one_write_and_every_reply_counts() -> None:
    """RFC 2920 3.1: the group MAIL, RCPTs, DATA before any reply; a refused recipient
    keeps its own (multi-line) reply, the others get the reply to the text."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        group = await reader.readuntil(b"DATA\r\n")  # nothing answered until it is all here
        assert group == (
            b"MAIL FROM:<app@acme.example>\r\nRCPT TO:<ok@inbox.example>\r\n"
            b"RCPT TO:<gone@inbox.example>\r\nDATA\r\n"
        )
        writer.write(
            b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550-5.1.1 no such\r\n550 5.1.1 user\r\n354 go\r\n"
        )
        assert await reader.readuntil(b"\r\n.\r\n") == TEXT.replace(b"\n.", b"\n..") + b".\r\n"
        writer.write(b"250 2.0.0 queued as 1\r\n")
        await _quit(reader, writer)

    async def send(connection: Connection) -> None:
        assert connection.pipelining
        envelope = Envelope("app@acme.example", ("ok@inbox.example", "gone@inbox.example"), TEXT)
        replies = await connection.send(envelope)
        assert {r: (x.code, x.text) for r, x in replies.items()} == {
            "ok@inbox.example": (250, "2.0.0 queued as 1"),
            "gone@inbox.example": (550, "5.1.1 no such 5.1.1 user"),
        }

    await _run(script, pipelining=True, send=send)


@pytest.mark.asyncio
async def test_data_accepted_without_recipients_gets_a_lone_dot_then_rset() -> None:
    """RFC 2920 3.1: if DATA was accepted though no RCPT was, the client sends a single dot
    (never the text), and resets the transaction."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"DATA\r\n")
        writer.write(b"250 ok\r\n550 5.1.1 no such user\r\n354 go ahead anyway\r\n")
        assert await reader.readline() == b".\r\n"
        writer.write(b"554 5.5.1 no valid recipients\r\n")
        assert await reader.readline() == b"RSET\r\n"
        writer.write(b"250 ok\r\n")
        await _quit(reader, writer)

    async def send(connection: Connection) -> None:
        replies = await connection.send(Envelope("a@acme.example", ("x@inbox.example",), TEXT))
        assert replies["x@inbox.example"].code == 550

    await _run(script, pipelining=True, send=send)


@pytest.mark.asyncio
async def test_refused_sender_refuses_every_recipient_and_resets() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"DATA\r\n")
        writer.write(b"451 4.7.1 try later\r\n503 5.5.1 no sender\r\n503 5.5.1 no rcpt\r\n")
        assert await reader.readline() == b"RSET\r\n"
        writer.write(b"250 ok\r\n")
        await _quit(reader, writer)

    async def send(connection: Connection) -> None:
        replies = await connection.send(Envelope("a@acme.example", ("x@inbox.example",), TEXT))
        assert (replies["x@inbox.example"].code, replies["x@inbox.example"].text) == (
            451,
            "4.7.1 try later",
        )

    await _run(script, pipelining=True, send=send)


@pytest.mark.asyncio
async def test_without_pipelining_each_command_waits_for_its_reply() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readline() == b"MAIL FROM:<a@acme.example>\r\n"
        with pytest.raises(TimeoutError):  # nothing more before MAIL is answered
            await asyncio.wait_for(reader.readline(), 0.3)
        writer.write(b"250 ok\r\n")
        assert await reader.readline() == b"RCPT TO:<x@inbox.example>\r\n"
        writer.write(b"250 ok\r\n")
        assert await reader.readline() == b"DATA\r\n"
        writer.write(b"354 go\r\n")
        await reader.readuntil(b"\r\n.\r\n")
        writer.write(b"250 2.0.0 done\r\n")
        await _quit(reader, writer)

    async def send(connection: Connection) -> None:
        assert not connection.pipelining
        replies = await connection.send(Envelope("a@acme.example", ("x@inbox.example",), TEXT))
        assert replies["x@inbox.example"].code == 250

    await _run(script, pipelining=False, send=send)


@pytest.mark.asyncio
async def test_replies_arriving_a_byte_at_a_time_are_put_together() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"DATA\r\n")
        for byte in b"250 ok\r\n250-first\r\n250 second\r\n354 go\r\n":
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.001)
        await reader.readuntil(b"\r\n.\r\n")
        writer.write(b"250 done\r\n")
        await _quit(reader, writer)

    async def send(connection: Connection) -> None:
        replies = await connection.send(Envelope("a@acme.example", ("x@inbox.example",), TEXT))
        assert (replies["x@inbox.example"].code, replies["x@inbox.example"].text) == (250, "done")

    await _run(script, pipelining=True, send=send)


@pytest.mark.asyncio
async def test_a_malformed_reply_loses_the_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"DATA\r\n")
        writer.write(b"hello there\r\n")
        assert await reader.read() == b""  # the client hangs up, without QUIT

    async def send(connection: Connection) -> None:
        with pytest.raises(aiosmtplib.SMTPServerDisconnected, match="Malformed"):
            await connection.send(Envelope("a@acme.example", ("x@inbox.example",), TEXT))
        assert not connection.is_connected

    await _run(script, pipelining=True, send=send)


@pytest.mark.asyncio
async def test_a_silent_server_times_out() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"DATA\r\n")
        assert await reader.read() == b""

    async def send(connection: Connection) -> None:
        with pytest.raises(aiosmtplib.SMTPTimeoutError):
            await connection.send(Envelope("a@acme.example", ("x@inbox.example",), TEXT))
        assert not connection.is_connected

    await _run(script, pipelining=True, send=send)


@pytest.mark.asyncio
async def test_an_address_with_a_line_break_is_never_written() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _quit(reader, writer)  # the first thing the server reads

    async def send(connection: Connection) -> None:
        envelope = Envelope("a@acme.example", ("x@inbox.example>\r\nRSET\r\nRCPT TO:<y@z",), TEXT)
        (reply,) = (await connection.send(envelope)).values()
        assert reply.code == 553 and reply.status == "5.1.3"

    await _run(script, pipelining=True, send=send)
