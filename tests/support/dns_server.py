"""A real authoritative DNS server on loopback, for tests.

Code under test talks to it over real UDP and TCP sockets, so the whole resolver path
(wire format, rcodes, negative answers with an SOA, timeouts) is exercised instead of mocked.
It serves whatever records it is given, of any type dnspython can parse from text.

    with DnsServer({"example.com": [("MX", 300, "10 mx1.example.com.")]}) as server:
        resolver = MxResolver([server.address])
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import traceback
from types import TracebackType

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Record = tuple[str, int, str]  # (rdtype, ttl, rdata text), e.g. ("MX", 300, "10 mx1.example.com.")

_MAX_CNAME_CHAIN = 8


class DnsServer:
    """Answers queries on 127.0.0.1 over UDP and TCP (same port) from a background thread.

    Names absent from `records` answer NXDOMAIN, names present without the asked type answer
    NOERROR with no answer; both carry an SOA whose TTL and MINIMUM are `soa_minimum`.
    A name with a CNAME is answered with the CNAME followed by the target's records.
    Relative names in rdata text are taken as absolute ("mx1.example.com" == "mx1.example.com.").
    """

    def __init__(
        self,
        records: dict[str, list[Record]] | None = None,
        soa_minimum: int = 30,
        port: int = 0,
    ) -> None:
        self.soa_minimum = soa_minimum
        self.queries: list[tuple[str, str]] = []  # (name, rdtype) as received, in order
        self._lock = threading.Lock()
        self._records: dict[dns.name.Name, list[tuple[int, int, dns.rdata.Rdata]]] = {}
        self._servfail: set[dns.name.Name] = set()
        for name, entries in (records or {}).items():
            self._records.setdefault(dns.name.from_text(name), [])
            for rdtype, ttl, text in entries:
                self.add(name, rdtype, ttl, text)
        self._udp, self._tcp = _bind_pair(port)
        self.port: int = self._udp.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._udp, selectors.EVENT_READ)
        self._selector.register(self._tcp, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._buffers: dict[socket.socket, bytearray] = {}
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, name="DnsServer", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def add(self, name: str, rdtype: str, ttl: int, text: str) -> None:
        """Add one record; a syntax error in `text` raises here, in the caller's thread."""
        rdata = dns.rdata.from_text(
            dns.rdataclass.IN,
            dns.rdatatype.from_text(rdtype),
            text,
            origin=dns.name.root,
            relativize=False,
        )
        with self._lock:
            self._records.setdefault(dns.name.from_text(name), []).append(
                (rdata.rdtype, ttl, rdata)
            )

    def remove(self, name: str) -> None:
        """Forget `name` entirely (it answers NXDOMAIN again), including servfail()."""
        key = dns.name.from_text(name)
        with self._lock:
            self._records.pop(key, None)
            self._servfail.discard(key)

    def servfail(self, name: str) -> None:
        """Make every query for `name` answer SERVFAIL until remove(name)."""
        with self._lock:
            self._servfail.add(dns.name.from_text(name))

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        for sock in (*self._buffers, self._udp, self._tcp, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()

    def __enter__(self) -> DnsServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- serving thread -------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            for key, _events in self._selector.select():
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._wake_r:
                    return
                with contextlib.suppress(OSError):
                    if sock is self._udp:
                        data, peer = sock.recvfrom(65535)
                        reply = self._answer(data)
                        if reply is not None:
                            sock.sendto(reply, peer)
                    elif sock is self._tcp:
                        conn, _ = sock.accept()
                        conn.setblocking(False)
                        self._buffers[conn] = bytearray()
                        self._selector.register(conn, selectors.EVENT_READ)
                    else:
                        self._serve_tcp(sock)

    def _serve_tcp(self, conn: socket.socket) -> None:
        """RFC 1035 4.2.2: each message is preceded by its length as two bytes."""
        chunk = b""
        with contextlib.suppress(BlockingIOError):
            chunk = conn.recv(65535)
        if not chunk:
            self._selector.unregister(conn)
            del self._buffers[conn]
            conn.close()
            return
        buffer = self._buffers[conn]
        buffer += chunk
        while len(buffer) >= 2:
            (size,) = struct.unpack("!H", buffer[:2])
            if len(buffer) < 2 + size:
                break
            reply = self._answer(bytes(buffer[2 : 2 + size]))
            del buffer[: 2 + size]
            if reply is not None:
                conn.settimeout(5)
                conn.sendall(struct.pack("!H", len(reply)) + reply)
                conn.setblocking(False)

    def _answer(self, wire: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None  # not worth a FORMERR for a test server
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        with self._lock:
            self.queries.append(
                (
                    question.name.to_text(omit_final_dot=True).lower(),
                    dns.rdatatype.to_text(question.rdtype),
                )
            )
            try:
                self._fill(response, question.name, question.rdtype)
                return response.to_wire()
            except Exception:  # a bad record must not kill the serving thread
                traceback.print_exc()
                response.answer.clear()
                response.authority.clear()
                response.set_rcode(dns.rcode.SERVFAIL)
                return response.to_wire()

    def _fill(self, response: dns.message.Message, qname: dns.name.Name, rdtype: int) -> None:
        name = qname
        for _ in range(_MAX_CNAME_CHAIN):
            if name in self._servfail:
                response.answer.clear()
                response.set_rcode(dns.rcode.SERVFAIL)
                return
            entries = self._records.get(name)
            if entries is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
                break
            matching = [e for e in entries if e[0] == rdtype]
            if matching:
                response.answer.append(_rrset(name, matching))
                return
            cname = [e for e in entries if e[0] == dns.rdatatype.CNAME]
            if not cname or rdtype == dns.rdatatype.CNAME:
                break
            response.answer.append(_rrset(name, cname[:1]))
            name = cname[0][2].target
        soa_owner = name.parent() if len(name) > 2 else dns.name.root
        response.authority.append(
            dns.rrset.from_text(
                soa_owner,
                self.soa_minimum,
                "IN",
                "SOA",
                f"ns.test. hostmaster.test. 1 3600 600 86400 {self.soa_minimum}",
            )
        )


def _rrset(name: dns.name.Name, entries: list[tuple[int, int, dns.rdata.Rdata]]) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, dns.rdataclass.IN, entries[0][0])
    for _rdtype, ttl, rdata in entries:
        rrset.add(rdata, ttl)  # an rrset has one TTL: the lowest wins
    return rrset


def _bind_pair(port: int = 0) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to 127.0.0.1 on the same port (a free one for 0)."""
    for _attempt in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", port))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(16)
        udp.setblocking(False)
        tcp.setblocking(False)
        return udp, tcp
    raise OSError("no free port for both UDP and TCP on 127.0.0.1")
