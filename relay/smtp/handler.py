"""What the relay decides during a submission session, as aiosmtpd handler hooks.

- AUTH (RFC 4954): PLAIN and LOGIN, checked by `relay.auth`; failures are delayed and
  lead to a lockout.
- MAIL: the client must be authenticated or come from a tenant's trusted network (530
  otherwise: the relay never relays for anyone else); the sender domain must belong to the
  tenant (P-HDR-ALIGN); the declared SIZE must fit (552); the tenant's rate must allow it.
- RCPT: at most the tenant's recipients per message (452 4.5.3, RFC 5321 4.5.3.1.10), and
  none on the tenant's suppression list (P-SUPPRESS).
- DATA: the message goes to `relay.accept` (policy checks, DKIM, the commit to the queue)
  with the `Received:` header of this session (RFC 5321 4.4); the outcome becomes the reply:
  `250` only after the commit, a refusal citing its P-rule.
"""

import base64
import binascii
import functools
import logging
import re
import uuid
from email.utils import formatdate

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session

from relay import metrics
from relay.accept import NO_UNSUBSCRIBE_SECRET, QUEUE_UNAVAILABLE, Acceptance, Submission
from relay.auth import Account, Authenticator, LockedOut
from relay.config.schema import Config, TenantSection
from relay.config.tenants import Tenants
from relay.dkim.service import DkimSigner
from relay.feedback.reputation.standing import Standing
from relay.mail.address import Path
from relay.policy.context import PolicyContext
from relay.policy.domain_status import DomainStatus
from relay.policy.lookups import DatabaseLookups
from relay.policy.pipeline import Pipeline, default_checks, refusal
from relay.policy.reading import prepare
from relay.policy.suppression_filter import SuppressionFilter
from relay.queue.store import Enqueuer
from relay.smtp import replies
from relay.smtp.ratelimit import TenantRateLimiter
from relay.smtp.session import RelaySession

log = logging.getLogger(__name__)
_HELO_UNSAFE = re.compile(r"[^A-Za-z0-9.\-:\[\]_]")


class SubmissionHandler:
    """aiosmtpd handler shared by all sessions of all submission listeners of a process."""

    def __init__(
        self,
        config: Config,
        enqueuer: Enqueuer,
        signer: DkimSigner,
        domains: DomainStatus | None = None,
        pipeline: Pipeline | None = None,
        unsubscribe_secret: bytes | None = None,
        suppressions: SuppressionFilter | None = None,
        standing: Standing | None = None,
    ) -> None:
        self.enqueuer = enqueuer
        self.lookups = DatabaseLookups(enqueuer.pool, standing or Standing(enqueuer.pool))
        self.signer = signer
        self.pipeline = pipeline or Pipeline(default_checks(unsubscribe_secret, suppressions))
        self.acceptance = Acceptance(
            config, enqueuer, signer, self.pipeline, self.lookups, domains, unsubscribe_secret
        )
        self.rates = TenantRateLimiter()
        self.hostname = config.relay.hostname
        self.authenticator = Authenticator(config.smtp, {})
        self.reload(config)

    def reload(self, config: Config) -> None:
        """Take new tenants, limits and credentials (SIGHUP); open sessions keep going."""
        prepare(t.identity.country for t in config.tenants if t.identity)
        self.config = config
        self.acceptance.config = config
        self.tenants = Tenants.from_config(config)
        accounts = {u: Account(t, h) for u, (t, h) in self.tenants.logins.items()}
        self.authenticator.update(config.smtp, accounts)

    # -- session bookkeeping (called by RelaySMTP) --------------------------------------------

    def session_opened(self, listener: str) -> None:
        metrics.OPEN_SESSIONS.labels(listener).inc()

    def session_closed(self, listener: str) -> None:
        metrics.OPEN_SESSIONS.labels(listener).dec()

    def size_limit(self, session: Session) -> int:
        tenant = self._tenant(session)
        if tenant is None:
            return self.config.smtp.max_message_size
        return min(tenant.limits.max_message_size, self.config.smtp.max_message_size)

    def _tenant(self, session: Session) -> TenantSection | None:
        assert isinstance(session, RelaySession)
        return self.tenants.by_name.get(session.tenant or "")

    async def handle_exception(self, error: Exception) -> str:
        """Never leak internals, never a permanent failure for our own bug (RFC 5321 4.2.5)."""
        log.exception("unexpected error in SMTP session", exc_info=error)
        metrics.MESSAGES_REJECTED.labels("", "internal").inc()
        return replies.INTERNAL_ERROR

    # -- AUTH ----------------------------------------------------------------------------

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        """RFC 4616: `authzid NUL authcid NUL passwd`, inline or after an empty challenge."""
        if len(args) == 1:
            blob = await server.challenge_auth("")
            if blob is MISSING:  # aborted with "*" or undecodable: aiosmtpd has replied
                return AuthResult(success=False, handled=True)
        else:
            blob = _b64(args[1])
            if blob is None:
                await server.push(replies.BAD_BASE64)
                return AuthResult(success=False, handled=True)
        parts = bytes(blob).split(b"\0")
        if len(parts) != 3:
            await server.push(replies.BAD_AUTH_DATA)
            return AuthResult(success=False, handled=True)
        return await self._check(server, parts[1], parts[2])

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        """The widespread LOGIN mechanism (draft-murchison-sasl-login): user, then password."""
        if len(args) == 1:
            login = await server.challenge_auth(SMTP.AuthLoginUsernameChallenge)
        else:
            login = _b64(args[1])
            if login is None:
                await server.push(replies.BAD_BASE64)
                return AuthResult(success=False, handled=True)
        if login is MISSING:  # aborted with "*" or undecodable: aiosmtpd has replied
            return AuthResult(success=False, handled=True)
        password = await server.challenge_auth(SMTP.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        return await self._check(server, bytes(login), bytes(password))

    async def _check(self, server: SMTP, login: bytes, password: bytes) -> AuthResult:
        session = server.session
        assert isinstance(session, RelaySession)
        username = login.decode("utf-8", "replace")
        try:
            tenant = await self.authenticator.authenticate(
                username, password.decode("utf-8", "replace"), session.client_ip
            )
        except LockedOut:
            log.warning("auth locked out user=%s client=%s", username, session.client_ip)
            metrics.MESSAGES_REJECTED.labels("", "auth").inc()
            await server.push(replies.AUTH_LOCKED)
            return AuthResult(success=False, handled=True)
        if tenant is None:
            log.warning("auth failed user=%s client=%s", username, session.client_ip)
            metrics.MESSAGES_REJECTED.labels("", "auth").inc()
            await server.push(replies.AUTH_INVALID)
            return AuthResult(success=False, handled=True)
        session.tenant = tenant
        log.info("auth ok user=%s tenant=%s client=%s", username, tenant, session.client_ip)
        return AuthResult(success=True, auth_data=username, message=replies.AUTH_SUCCESS)

    # -- MAIL, RCPT, DATA -----------------------------------------------------------------

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, path: Path
    ) -> str:
        assert isinstance(session, RelaySession)
        if not session.authenticated:
            session.tenant = self.tenants.for_client(session.client_ip)
        tenant = self._tenant(session)
        if tenant is None:
            return self._refuse("", "auth", replies.AUTH_REQUIRED)
        ctx = PolicyContext(tenant, path.address)
        verdicts = await self.pipeline.run("mail", ctx)
        refused = refusal(verdicts)
        if refused is not None:
            return self._refuse(tenant.name, refused.rule, refused.reply())
        limit = self.size_limit(session)
        if int(path.params.get("SIZE") or 0) > limit:
            return self._refuse(tenant.name, "P-SIZE", replies.MESSAGE_TOO_BIG.format(limit=limit))
        if not self.rates.allow(tenant.name, tenant.limits.submissions_per_minute):
            reply = replies.RATE_LIMITED.format(
                tenant=tenant.name, limit=tenant.limits.submissions_per_minute
            )
            return self._refuse(tenant.name, "rate", reply)
        envelope.mail_from = path.address
        envelope.policy_verdicts = list(verdicts)  # the audit trail, completed at DATA
        envelope.mail_options = [f"{k}={v}" if v else k for k, v in path.params.items()]
        envelope.smtp_utf8 = "SMTPUTF8" in path.params
        return replies.SENDER_OK

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, path: Path
    ) -> str:
        tenant = self._tenant(session)
        assert tenant is not None  # MAIL succeeded
        if len(envelope.rcpt_tos) >= tenant.limits.recipients_per_message:
            return self._refuse(tenant.name, "P-SIZE", replies.TOO_MANY_RECIPIENTS)
        ctx = PolicyContext(tenant, envelope.mail_from or "", [path.address], lookups=self.lookups)
        verdicts = await self.pipeline.run("rcpt", ctx)
        refused = refusal(verdicts)
        if refused is not None:
            return self._refuse(tenant.name, refused.rule, refused.reply())
        envelope.policy_verdicts.extend(verdicts)
        envelope.rcpt_tos.append(path.address)
        return replies.RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(session, RelaySession)
        tenant = self._tenant(session)
        assert tenant is not None and envelope.mail_from is not None
        assert isinstance(envelope.content, bytes)
        submission = Submission(
            tenant,
            envelope.mail_from,
            tuple(envelope.rcpt_tos),
            envelope.content,
            session.client_ip,
            tuple(envelope.policy_verdicts),
            functools.partial(self._received, session, envelope),
        )
        outcome = await self.acceptance.accept(submission)
        if outcome.queue_id is not None:
            return replies.QUEUED.format(queue_id=outcome.queue_id)
        assert outcome.refused is not None
        if outcome.refused == QUEUE_UNAVAILABLE:
            reply = replies.QUEUE_UNAVAILABLE
        elif outcome.refused == NO_UNSUBSCRIBE_SECRET:
            reply = replies.INTERNAL_ERROR
        else:
            reply = outcome.policy_reply
        return self._refuse(tenant.name, outcome.refused, reply)

    def _refuse(self, tenant: str, reason: str, reply: str) -> str:
        metrics.MESSAGES_REJECTED.labels(tenant, reason).inc()
        log.info("refused tenant=%s reason=%s reply=%r", tenant, reason, reply)
        return reply

    def _received(self, session: RelaySession, envelope: Envelope, queue_id: uuid.UUID) -> bytes:
        """The trace header (RFC 5321 4.4) with the RFC 3848 protocol type."""
        protocol = "ESMTP" if session.extended_smtp else "SMTP"
        if session.ssl is not None or session.implicit_tls:
            protocol += "S"
        if session.authenticated:
            protocol += "A"
        helo = _HELO_UNSAFE.sub("", session.host_name or "unknown")[:255] or "unknown"
        recipient = f"\r\n\tfor <{envelope.rcpt_tos[0]}>" if len(envelope.rcpt_tos) == 1 else ""
        line = (
            f"Received: from {helo} ([{session.client_ip}])\r\n"
            f"\tby {self.hostname} (relay) with {protocol} id {queue_id}{recipient};\r\n"
            f"\t{formatdate(localtime=False, usegmt=True)}\r\n"
        )
        return line.encode("utf-8")


def _b64(text: str) -> bytes | None:
    if text == "=":  # RFC 4954 4: an empty initial response
        return b""
    try:
        return base64.b64decode(text.encode(), validate=True)
    except (binascii.Error, ValueError):
        return None
