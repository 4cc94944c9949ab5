"""The parts of aiosmtpd that `relay.smtp.protocol` relies on beyond its public API.

`RelaySMTP` builds a session by copying the attributes aiosmtpd's constructor set for the
listener's first session and making the per-session ones afresh (the constructor's
introspection was a third of a short session's setup). That is only right while aiosmtpd
sets the attributes listed here: a release that adds one fails this test, and whoever
upgrades decides whether the new attribute is per session (`_PER_SESSION`) or shared.
"""

import asyncio
import ssl

import aiosmtpd
import pytest
from aiosmtpd.smtp import SMTP

from relay.smtp.budget import DataBudget
from relay.smtp.limits import ConnectionCounter, ListenerOptions
from relay.smtp.protocol import _PER_SESSION, RelaySMTP

SHARED_BY_SESSIONS = frozenset(
    {
        # settings of the listener, given to the constructor or derived from them
        "__ident__", "_auth_callback", "_auth_require_tls", "_auth_required", "_authenticator",
        "_decode_data", "_ehlo_hook_ver", "_enforce_call_limit", "_proxy_timeout",
        "_timeout_duration", "data_size_limit", "enable_SMTPUTF8", "hostname", "loop",
        "require_starttls", "tls_context",
        # the handler and its hook methods (a dict aiosmtpd only reads), and our note of the
        # AUTH mechanisms' method names, bound afresh per session
        "event_handler", "_handle_hooks", "_auth_names",
    }
)  # fmt: skip
"""What sessions of one listener share: settings and the handler, never session state."""

PRIVATE_METHODS_CALLED = (
    "_handle_client", "_call_handler_hook", "_set_rset_state", "_set_post_data_state",
    "_reset_timeout", "_cb_client_connected", "_create_session", "push",
)  # fmt: skip


def _options() -> ListenerOptions:
    return ListenerOptions(
        name="pin", implicit_tls=False, normalize_newlines=False, max_message_size=1 << 20,
        data_timeout=60.0, max_errors=10, connections=ConnectionCounter(10, 10),
        data_budget=DataBudget(1 << 24),
    )  # fmt: skip


class _Handler:
    async def handle_DATA(self, *_: object) -> str:
        return "250 OK"


def _session(handler: object, options: ListenerOptions) -> RelaySMTP:
    return RelaySMTP(
        handler, options, hostname="pin.example", enable_SMTPUTF8=True, require_starttls=False,
        tls_context=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), auth_required=False,
        loop=asyncio.get_running_loop(),
    )  # fmt: skip


@pytest.mark.asyncio
async def test_aiosmtpd_sets_the_attributes_the_session_copy_knows() -> None:
    handler, options = _Handler(), _options()
    first = _session(handler, options)  # aiosmtpd's constructor, then the template is kept
    assert options.session_template is not None
    shared = set(options.session_template)
    assert shared == SHARED_BY_SESSIONS, (
        f"aiosmtpd {aiosmtpd.__version__} sets {sorted(shared - SHARED_BY_SESSIONS)} and no "
        f"longer {sorted(SHARED_BY_SESSIONS - shared)}: per session "
        "(relay.smtp.protocol._PER_SESSION) or shared by a listener's sessions?"
    )
    second = _session(handler, options)  # the copy
    assert set(vars(second)) == set(vars(first))
    for name in _PER_SESSION & set(vars(first)):
        value = getattr(second, name)
        if isinstance(value, dict | list | set):
            assert value is not getattr(first, name), f"{name} is shared between sessions"


def test_the_private_methods_called_exist() -> None:
    missing = [name for name in PRIVATE_METHODS_CALLED if not callable(getattr(SMTP, name, None))]
    assert missing == []
