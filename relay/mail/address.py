"""Envelope addresses from MAIL FROM and RCPT TO, parsed strictly (RFC 5321 4.1.2).

A reverse- or forward-path is `<local@domain>`. Anything that could smuggle a second
command or header through a lax parser (CR, LF, NUL, space, a second `>`) makes the whole
command a syntax error rather than being cleaned up. Domains are checked and converted with
the `idna` library (UTS 46), never by hand; address literals are not accepted for submission.
"""

import functools
import re
from dataclasses import dataclass

import idna

_DOT_ATOM = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+)*$"
)
_QUOTED = re.compile(r'^"([\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"$')
_PARAM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*(=[\x21-\x3c\x3e-\x7e]+)?$")
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f<>]")


class AddressError(ValueError):
    """The path or its parameters are not valid SMTP syntax."""


@dataclass(frozen=True)
class Path:
    """A parsed path: the address as given, its domain as an A-label, and the parameters."""

    address: str
    domain: str
    params: dict[str, str | None]

    @property
    def is_null(self) -> bool:
        return self.address == ""


def parse_path(arg: str, keyword: str) -> Path:
    """Parse `FROM:<a@b> SIZE=10` (keyword `FROM:`) or `TO:<a@b>` into a `Path`.

    One space after the colon is tolerated, as Postfix does, though RFC 5321 has none.
    """
    if not arg[: len(keyword)].upper() == keyword:
        raise AddressError("missing keyword")
    rest = arg[len(keyword) :].lstrip(" ")
    if not rest.startswith("<"):
        raise AddressError("path must be in angle brackets")
    end = rest.find(">")
    if end < 0:
        raise AddressError("unterminated path")
    address, tail = rest[1:end], rest[end + 1 :]
    if tail and not tail.startswith(" "):
        raise AddressError("text after the path")
    params = _parse_params(tail.split())
    if address == "":
        return Path("", "", params)
    if address.startswith("@"):  # RFC 5321 4.1.2 source route: ignore, keep the mailbox
        address = address.split(":", 1)[-1]
    return Path(address, _check_mailbox(address), params)


def _parse_params(words: list[str]) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for word in words:
        if not _PARAM.match(word):
            raise AddressError(f"malformed parameter {word!r}")
        name, _, value = word.partition("=")
        params[name.upper()] = value or None
    return params


def _check_mailbox(address: str) -> str:
    """Validate `local@domain`; return the domain as a lower-case A-label."""
    if _FORBIDDEN.search(address):  # also in quoted local parts: no space, ever
        raise AddressError("forbidden character in address")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise AddressError("address needs a local part and a domain")
    if len(local.encode()) > 64 or len(address.encode()) > 254:
        raise AddressError("address too long (RFC 5321 4.5.3.1)")
    if not (_DOT_ATOM.match(local) or _QUOTED.match(local)):
        raise AddressError("malformed local part")
    return to_a_label(domain)


@functools.lru_cache(maxsize=4096)
def to_a_label(domain: str) -> str:
    """A domain as its lower-case ASCII (A-label) form, or AddressError (RFC 5890, UTS 46).

    Cached: a relay sees the same few thousand domains over and over, and the `idna`
    library's UTS 46 mapping costs tens of microseconds a call. A refusal raises afresh
    each time (lru_cache keeps results only)."""
    if domain.startswith("[") or domain.endswith("."):
        raise AddressError("address literals and trailing dots are not accepted")
    try:
        ascii_domain = idna.encode(domain, uts46=True).decode("ascii").lower()
    except idna.IDNAError as exc:
        raise AddressError(f"invalid domain: {exc}") from exc
    if "." not in ascii_domain:
        raise AddressError("domain must be fully qualified")
    return ascii_domain
