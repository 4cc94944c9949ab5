"""One SMTP session's state as the relay keeps it: aiosmtpd's, plus who is submitting."""

import asyncio
from typing import Any

from aiosmtpd.smtp import Session


class RelaySession(Session):
    """aiosmtpd's session plus who is submitting: set at AUTH or from a trusted network."""

    # aiosmtpd 1.4 still writes its deprecated `login_data` after every successful AUTH, and
    # that property logs a WARNING each time. The relay reads only `auth_data` (the tenant's
    # username); here the legacy slot is a plain attribute, so writing it logs nothing.
    login_data: Any = None

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.tenant: str | None = None
        self.client_ip: str = ""
        self.listener: str = ""
        self.implicit_tls: bool = False
