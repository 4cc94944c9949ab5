"""The typed, frozen shape of `relay.toml`.

Every table rejects unknown keys (a typo must not silently fall back to a default), every
field names its default and says what it does, and durations and sizes take human units
(`relay.config.units`). `relay check-config FILE` validates a file against this without
starting anything.
"""

import ipaddress
import os
import socket
from collections import Counter
from typing import Annotated, Literal

import idna
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from relay.config.units import Bytes, Seconds

HostPort = Annotated[str, Field(pattern=r"^(\[[0-9a-fA-F:.]+\]|[^\s:\[\]]+):\d{1,5}$")]
"""`host:port`, IPv6 hosts in brackets (`[::1]:587`)."""


def _network(value: str) -> str:
    ipaddress.ip_network(value, strict=False)  # raises ValueError naming the value
    return value


Network = Annotated[str, AfterValidator(_network)]
"""An IP network (`192.0.2.0/24`, `2001:db8::/48`) or address."""


def _a_label(domain: str) -> str:
    try:
        return idna.encode(domain.strip().rstrip("."), uts46=True).decode("ascii").lower()
    except idna.IDNAError as exc:
        raise ValueError(f"{domain!r} is not a valid domain name: {exc}") from exc


def split_host_port(value: str) -> tuple[str, int]:
    """Split a validated `host:port` into its parts (brackets of IPv6 removed)."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


class Strict(BaseModel):
    """Base of every table: unknown keys are errors, values are immutable once loaded.

    A field's docstring becomes its description (`use_attribute_docstrings`), so the
    sentence beside the code is also what `relay.config.reference` prints in
    docs/configuration.md: one text to keep true, not two."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True
    )


class RelaySection(Strict):
    """This host: its name, where it keeps its files, how many processes take submissions."""

    hostname: str = Field(default_factory=socket.getfqdn)
    """Name in the banner, `Received:` headers, generated Message-IDs and outbound EHLO.
    Resolved once at load (aiosmtpd would otherwise call getfqdn() per connection)."""
    data_dir: str = "data"
    """Embedded PostgreSQL, generated TLS certificate, DKIM keys; relative paths are relative
    to the file."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """The least severe level of log records written."""
    processes: int | Literal["auto"] = 1
    """Processes sharing the submission listeners (SO_REUSEPORT), for more than one core's
    worth of SMTP, DKIM and policy work: the `relay serve` process does everything, the
    others only take submissions. `"auto"`: one per CPU. 1: one process, as before."""

    @field_validator("processes", mode="before")
    @classmethod
    def _process_count(cls, value: object) -> object:
        if value == "auto" or (type(value) is int and value >= 1):
            return value
        raise ValueError(f'expected an integer >= 1 or "auto", got {value!r}')

    @property
    def process_count(self) -> int:
        """`processes` with "auto" resolved to this machine's CPU count."""
        if self.processes == "auto":
            return os.cpu_count() or 1
        return self.processes


class QueueSection(Strict):
    """Where the queue lives: the embedded PostgreSQL, or a server all relay processes share."""

    dsn: str = ""
    """Empty: an embedded PostgreSQL under `data_dir/pg`; else a libpq DSN of a shared server."""
    pool_size: int = Field(default=10, ge=2, le=200)
    """Most connections to PostgreSQL of each of a process's two pools: one for SMTP sessions
    and the group commit, one for delivery and everything else."""
    commit_batch: int = Field(default=256, ge=1, le=10_000)
    """Most messages stored by one group commit (concurrent sessions share one fsync)."""


class TlsSection(Strict):
    """The certificate the SMTP listeners present."""

    cert_file: str = ""
    """PEM certificate chain; empty: a self-signed one is generated into `data_dir/tls`."""
    key_file: str = ""
    """PEM private key matching `cert_file`; the two are given together or not at all."""

    @model_validator(mode="after")
    def _both_or_neither(self) -> "TlsSection":
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file are given together or not at all")
        return self


class ListenerSection(Strict):
    """An SMTP listener: where it listens, how TLS starts, whose mail it takes. A relay needs
    at least one."""

    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    """Label in logs and metrics (lower-case letters, digits, `_` and `-`); unique."""
    address: HostPort
    """Where to listen, e.g. `0.0.0.0:587`."""
    tls: Literal["starttls", "implicit"] = "starttls"
    """`starttls`: plain until STARTTLS (RFC 3207, port 587); `implicit`: TLS from the first
    byte (RFC 8314, port 465)."""
    bare_newlines: Literal["reject", "normalize"] = "reject"
    """Bare CR or LF in DATA: `reject` with 554 (the safe default), or `normalize` to CRLF for
    old devices, like Postfix's `smtpd_forbid_bare_newline = normalize`. Either way only
    CRLF.CRLF ends the data (no SMTP smuggling)."""
    role: Literal["submission", "feedback"] = "submission"
    """`submission`: tenants submit mail (AUTH or trusted networks). `feedback`: the
    inbound listener for what comes back (port 25, the MX of the return-path domains): no
    AUTH, mail accepted only for tenants' return-path domains, `[feedback] fbl_addresses`
    and `abuse_address`; everything else `550 5.7.1`, never relayed."""
    max_connections: int | None = Field(default=None, ge=1)
    """Open sessions on this listener; more get `421 4.7.0`. Default: `[smtp]
    max_connections` for a submission listener, a tenth of it (at least 10) for a feedback
    listener, whose clients are anonymous: they cannot take the slots tenants need."""

    def session_cap(self, smtp: "SmtpSection") -> int:
        if self.max_connections is not None:
            return self.max_connections
        if self.role == "feedback":
            return max(10, smtp.max_connections // 10)
        return smtp.max_connections


class SmtpSection(Strict):
    """The SMTP sessions of every listener: caps, timeouts, sizes and AUTH lockouts."""

    max_connections: int = Field(default=1000, ge=1)
    """Open sessions per process across all listeners; more get `421 4.7.0`. Also each
    listener's accept backlog (capped by the kernel's `net.core.somaxconn`), as Postfix's
    master listens with a backlog of its process limit."""
    max_connections_per_client: int = Field(default=50, ge=1)
    """Open sessions per client IP address."""
    tls_handshake_timeout: Seconds = Field(default=10, gt=0)
    """Time a client has to finish the TLS handshake on an implicit-TLS listener (asyncio
    waits 60 s): a silent connection holds a descriptor no longer. A connection there holds
    its slot from the moment it is accepted, so handshakes in progress count toward the
    caps, and one past a cap is closed before any handshake is spent on it."""
    command_timeout: Seconds = Field(default=300, gt=0)
    """Idle time allowed between commands (RFC 5321 4.5.3.2.7: at least 5 minutes)."""
    data_timeout: Seconds = Field(default=600, gt=0)
    """Time allowed for the whole DATA transfer; a client trickling data is cut off with
    `421 4.4.2`."""
    max_errors: int = Field(default=20, ge=1)
    """Error replies in one session, with no message accepted in between, before it is
    closed with `421 4.7.0`, like Postfix's `smtpd_hard_error_limit`. Recipients past a
    tenant's limit (`452 4.5.3`) are not errors, up to 1,000 a session."""
    max_message_size: Bytes = Field(default="50MiB", ge=1024)
    """Largest message any tenant may send; advertised in EHLO SIZE."""
    data_in_flight: Bytes = Field(default="256MiB", ge=1024)
    """Message data a relay process holds in memory at once, all sessions together (read,
    not yet queued); past it DATA, or MAIL with a SIZE that does not fit, gets `452 4.3.1`
    and the client tries again later. At least `max_message_size`."""
    max_mime_parts: int = Field(default=500, ge=2)
    """MIME entities a message may have (P-SIZE, `554 5.6.0`); more are not read."""
    max_mime_depth: int = Field(default=10, ge=1)
    """Levels of MIME nesting a message may have (P-SIZE, `554 5.6.0`)."""
    min_network_prefix_ipv4: int = Field(default=16, ge=0, le=32)
    """Tenants' trusted `networks` may be no wider than this IPv4 prefix (/16)."""
    min_network_prefix_ipv6: int = Field(default=48, ge=0, le=128)
    """Tenants' trusted `networks` may be no wider than this IPv6 prefix (/48)."""
    auth_failure_delay: Seconds = Field(default=1.0, ge=0)
    """Pause before answering a failed AUTH (slows password guessing)."""
    auth_max_failures: int = Field(default=5, ge=1)
    """Failed AUTHs of one username from one client address, or from one address for any
    usernames, within `auth_failure_window` before that pair, or that address, is locked
    out (`454 4.7.0`); other addresses are not affected."""
    auth_account_failures: int = Field(default=50, ge=1)
    """Failed AUTHs of one username from all addresses within the window before it is
    throttled: only addresses without failures of their own may try it until
    `auth_lockout` has passed (its owner is never refused)."""
    auth_failure_window: Seconds = Field(default=900, gt=0)
    """The window in which `auth_max_failures` and `auth_account_failures` are counted."""
    auth_lockout: Seconds = Field(default=900, gt=0)
    """How long a locked pair or address gets `454 4.7.0` for every AUTH."""

    @model_validator(mode="after")
    def _one_message_fits(self) -> "SmtpSection":
        if self.data_in_flight < self.max_message_size:
            raise ValueError(
                f"data_in_flight ({self.data_in_flight}) is smaller than max_message_size "
                f"({self.max_message_size}): a message of the largest size could never pass"
            )
        return self


class DeliverySection(Strict):
    """Delivery to the destinations' MX hosts (or `[[routes]]`): concurrency, retries,
    timeouts and outbound TLS."""

    concurrency: int = Field(default=200, ge=1)
    """Deliveries in flight per process, all destinations together."""
    connections_per_site: int = Field(default=10, ge=1)
    """Parallel SMTP connections per destination site per process, for sites whose own
    `connections` neither `[[sites]]` nor the shipped list sets. Per site, not per domain:
    the domains one operator's MX hosts serve share them (formerly
    `[delivery] connections_per_domain`, still read: `relay.config.renamed`)."""
    messages_per_connection: int = Field(default=50, ge=1)
    """Messages sent over one connection before it is closed (RFC 5321 allows many)."""
    default_site_messages_per_minute: float = Field(default=0, ge=0)
    """Ceiling of a destination site's rate, all relay processes together, for sites that
    neither `[[sites]]` nor the shipped list (`relay/delivery/data/sites.toml`) names;
    0: no ceiling and no adaptive rate for them (as Postfix and KumoMTA do by default),
    only their connection limits and the pause after repeated failures. Named apart from
    a site's own `messages_per_minute`, which overrides it (formerly
    `[delivery] messages_per_minute`, still read: `relay.config.renamed`)."""
    site_pause_after: int = Field(default=5, ge=1)
    """Consecutive failed connections to a site after which it is paused."""
    site_pause: Seconds = Field(default="5m", gt=0)
    """How long a failing site is paused; its deliveries wait, not failed, and fall due
    spread over half a pause after it ends."""
    lease: Seconds = Field(default=60, ge=1)
    """How long a worker holds a delivery; renewed while it works. A crashed worker's
    deliveries go back to the queue once its lease expires."""
    queue_lifetime: Seconds = Field(default="5d", gt=0)
    """Time after which an undeliverable message bounces (Postfix's maximal_queue_lifetime)."""
    retry_initial: Seconds = Field(default=60, gt=0)
    """First retry delay; doubled on each further deferral, with ±20% jitter."""
    retry_max: Seconds = Field(default=3600, gt=0)
    """Longest delay between two attempts."""
    port: int = Field(default=25, ge=1, le=65535)
    """Port of MX hosts (routes name their own)."""
    nameservers: list[HostPort] = []
    """DNS servers for MX lookups as `host:port`; empty: the system resolver."""
    private_mx: bool = False
    """Connect to MX hosts at loopback, private or link-local addresses too. Off: a domain
    whose MX points inside the relay's network bounces (5.1.2) instead of making the relay
    a probe of it; `[[routes]]` may name any host."""
    tls: Literal["opportunistic", "required", "none"] = "opportunistic"
    """Outbound STARTTLS: use it when offered, demand it, or never use it."""
    verify_certificates: bool = False
    """Check MX certificates; off by default since many MX certificates fail validation
    and opportunistic TLS is better than none (RFC 7435)."""
    connect_timeout: Seconds = Field(default=30, gt=0)
    """Time to connect to an MX host and read its greeting; also the longest wait for a DNS
    answer about a destination's MX hosts."""
    command_timeout: Seconds = Field(default=300, gt=0)
    """Per SMTP command, RFC 5321 4.5.3.2 (the final dot may take up to 10 minutes there;
    one value keeps it simple)."""


class DkimSection(Strict):
    """DKIM signing: the signature's lifetime, and what becomes of mail without a key."""

    expire_after: Seconds = Field(default="7d", ge=0)
    """Signature lifetime written as `x=` (RFC 6376 3.5); 0 leaves `x=` out. Keys live in
    `data_dir/dkim` (`relay dkim keygen`, `relay dkim rotate`)."""
    allow_unsigned: bool = False
    """P-DKIM: mail whose From domain has no active key is refused with `550 5.7.1
    [P-DKIM]` (the default), or, when true, leaves unsigned."""
    generate_missing: bool = False
    """At start and on reload, make and activate a key for every tenant domain without one,
    with no DNS check: for the demo and local tests, whose domains have no DNS. Anywhere
    else keys sign only after `relay dkim rotate` has seen their record published."""


CONTENT_CATEGORIES = (
    "dating", "drugs", "get_rich", "stock_tips", "mlm", "affiliate", "debt", "supplements",
    "list_brokering", "piracy", "crypto", "gambling", "tobacco",
)  # fmt: skip
"""POLICY.md's prohibited categories (P-CONTENT), as `relay/policy/data/content.toml` names them."""
ContentCategory = Literal[CONTENT_CATEGORIES]  # type: ignore[valid-type]


class PolicySection(Strict):
    """The sending policy's settings for the whole deployment: domain verification (P-DNSAUTH,
    P-WHOIS), one-click unsubscribe, the service's own contacts, the prohibited categories."""

    require_verified_domains: bool = True
    """Send only from domains that passed `relay domain verify` (P-DNSAUTH): SPF
    authorising the relay, the DKIM keys published, a DMARC record. The demo turns it off:
    its domain has no DNS."""
    spf_mechanism: str = ""
    """What a sending domain's SPF must contain to authorise the relay, e.g.
    `include:_spf.relay.example` or `ip4:192.0.2.10`."""
    recheck_every: Seconds = Field(default="1d", gt=0)
    """How often the running relay re-verifies every recorded domain."""
    rdap_bootstrap_file: str = ""
    """P-WHOIS: IANA's RDAP bootstrap registry for domains (RFC 9224), a newer copy of
    https://data.iana.org/rdap/dns.json; empty: the copy shipped with the relay."""
    rdap_base_url: str = Field(default="", pattern=r"^(https?://\S+/)?$")
    """P-WHOIS: one RDAP service asked about every domain (a local RDAP proxy, say),
    ending in `/`; empty: the service the bootstrap registry names for the domain's TLD."""
    rdap_privacy_file: str = ""
    """P-WHOIS: more privacy services and redaction markers, in the shape of the shipped
    `relay/policy/data/privacy_services.toml`; empty: the shipped list alone."""
    rdap_timeout: Seconds = Field(default=15, gt=0)
    """P-WHOIS: the longest wait for one RDAP answer."""
    unsubscribe_url: str = Field(default="", pattern=r"^(https://\S+)?$")
    """https base URL of the one-click unsubscribe endpoint, for tenants with
    `unsubscribe = "relay"`; the signed token is appended as the last path segment."""
    unsubscribe_secret_file: str = ""
    """File holding the HMAC secret of unsubscribe tokens (32 bytes or more); empty: the
    RELAY_UNSUBSCRIBE_SECRET environment variable."""
    unsubscribe_lifetime: Seconds = Field(default="90d", ge=86400)
    """How long a one-click unsubscribe link works (whole days; CAN-SPAM asks for 30 at
    least); later the recipient uses the message's visible link."""
    service_contacts: list[str] = []
    """The sending service's own contact details that no tenant mail may show as its own
    (P-NO-SERVICE-CONTACT): addresses (`abuse@relay.example`), and web sites as a URL or
    host name (`https://relay.example`: the host and its subdomains)."""
    content_categories: list[ContentCategory] = list(CONTENT_CATEGORIES)
    """P-CONTENT: the prohibited categories this deployment enforces; all by default."""


class FeedbackProvider(Strict):
    """A mailbox provider's feedback loop, and what proves that a report is its own: the
    address it connects from, or a DKIM signature of its domain that verifies."""

    name: str = Field(min_length=1)
    """Label of the feedback loop, named with each report it vouches for."""
    networks: list[Network] = []
    """Networks its reports are sent from (the connecting address is compared)."""
    dkim_domains: list[str] = []
    """Domains whose valid DKIM signature on a report proves it (`d=` the domain or below)."""

    @field_validator("dkim_domains")
    @classmethod
    def _lower_domains(cls, domains: list[str]) -> list[str]:
        return [_a_label(d) for d in domains]

    @model_validator(mode="after")
    def _something_proves_it(self) -> "FeedbackProvider":
        if not self.networks and not self.dkim_domains:
            raise ValueError("a feedback provider needs networks or dkim_domains")
        return self


class FeedbackSection(Strict):
    """What comes back after delivery: the feedback listener's addresses and limits, the abuse
    desk, and how long personal data is kept (P-RETENTION)."""

    providers: list[FeedbackProvider] = []
    """The feedback loops whose complaint reports (ARF) count; a report that none of them
    vouches for is kept as `unverified` and changes nothing."""
    fbl_addresses: list[str] = []
    """Addresses the feedback listener accepts complaint reports (ARF, RFC 5965) for: the
    addresses registered with the mailbox providers' feedback loops."""
    abuse_address: str = ""
    """The service's abuse desk (P-ABUSE-DESK): reports forwarded here are matched to the
    message, the reporter is suppressed and the report kept (`relay abuse ls`). Also the
    HTTP report form at `/abuse` when set."""
    retention_bodies: Seconds = Field(default="7d", ge=0)
    """P-RETENTION: a message body is kept this long after its last delivery attempt ended."""
    retention_events: Seconds = Field(default="90d", gt=0)
    """P-RETENTION: events, finished envelopes and processed reports are kept this long;
    the hourly rates stay."""
    process_every: Seconds = Field(default=1.0, gt=0)
    """How often the feedback processor looks for newly received reports."""
    reports_per_client: int = Field(default=100, ge=1)
    """Reports the feedback listener takes from one client address per hour; more get
    `450 4.7.1` at MAIL (anyone can connect to it)."""
    report_bytes_per_client: Bytes = Field(default="50MiB", ge=1024)
    """Bytes of reports it takes from one client address per hour."""
    return_path_lifetime: Seconds = Field(default="30d", ge=86400)
    """How long a return-path (VERP) address is read as naming its delivery (whole days);
    a bounce to an older one is refused at RCPT like a forged one."""


class ReputationSection(Strict):
    """P-COMPLAINT and P-BOUNCE: when a tenant's rates throttle, and then suspend, its bulk
    sending. Rates are fractions (0.003) or percentages ("0.3%")."""

    check_every: Seconds = Field(default=60, gt=0)
    """How often the rates are judged (one round for all relay processes on a database)."""
    window: Seconds = Field(default="7d", gt=0)
    """The sliding window the rates are measured over, in whole hours."""
    min_volume: int = Field(default=1000, ge=1)
    """Deliveries (for the hard-bounce rate: deliveries and hard bounces) within the window
    before a rate is judged at all; fewer say too little."""
    complaint_warn: float = 0.001
    """Complaints per delivered message at one site above which the tenant's pace toward
    that site is cut (P-COMPLAINT)."""
    complaint_limit: float = 0.003
    """Complaints per delivered message, over all the tenant's traffic, above which its bulk
    sending is suspended until an admin resumes it (P-COMPLAINT)."""
    bounce_warn: float = 0.05
    """Hard bounces per attempted delivery (delivered + hard-bounced) at one site above which
    the pace toward that site is cut (P-BOUNCE)."""
    bounce_limit: float = 0.10
    """Hard bounces per attempted delivery, over all the tenant's traffic, above which its
    bulk sending is suspended (P-BOUNCE)."""
    throttle_floor: float = Field(default=0.0625, gt=0, le=1)
    """The lowest pace factor: each round above the warning level halves it, down to this."""
    throttle_recovery: float = Field(default=0.125, gt=0, le=1)
    """Added back to the factor each round below the warning level, up to 1."""

    @field_validator(
        "complaint_warn", "complaint_limit", "bounce_warn", "bounce_limit", mode="before"
    )
    @classmethod
    def _percent(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().endswith("%"):
            try:
                return float(value.strip()[:-1]) / 100
            except ValueError:
                pass
            raise ValueError(f"expected a rate such as 0.003 or '0.3%', got {value!r}")
        return value

    @field_validator("complaint_warn", "complaint_limit", "bounce_warn", "bounce_limit")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0 < value < 1:
            raise ValueError(f"a rate is between 0 and 1 (or 0% and 100%), got {value}")
        return value

    @model_validator(mode="after")
    def _warn_below_limit(self) -> "ReputationSection":
        for what in ("complaint", "bounce"):
            warn, limit = getattr(self, f"{what}_warn"), getattr(self, f"{what}_limit")
            if warn >= limit:
                raise ValueError(f"{what}_warn ({warn}) must be below {what}_limit ({limit})")
        return self


class CanarySection(Strict):
    """P-CANARY: large bulk campaigns go out as a canary first
    (`relay.feedback.reputation.canary`)."""

    enabled: bool = False
    """Hold every bulk message with a Feedback-ID or List-Id as it is queued until its
    campaign has stopped growing, then send a large one as a canary. Off: nothing is held
    (holding delays every campaign by at least `settle`)."""
    min_size: int = Field(default=2000, ge=1)
    """Campaigns with fewer recipients go out whole once they stop growing."""
    max_canary: int = Field(default=1000, ge=1)
    """The canary is the first 10% of a campaign's recipients, at most this many."""
    settle: Seconds = Field(default=60, gt=0)
    """A campaign with no new recipient for this long is complete."""
    max_collect: Seconds = Field(default="30m", gt=0)
    """A campaign still growing after this long is decided on what has arrived (a list that
    never pauses must not wait forever); later recipients join its held rest."""
    window: Seconds = Field(default="6h", gt=0)
    """How long the rest waits while the canary's bounces, unsubscribes and complaints
    come in."""
    remember: Seconds = Field(default="1d", gt=0)
    """How long a release or decline applies to more mail of the same campaign; after that
    the same Feedback-ID or List-Id (a list's next send) starts a new campaign."""
    check_every: Seconds = Field(default=10, gt=0)
    """How often campaigns are looked at."""
    max_complaint_rate: float = Field(default=0.001, ge=0, le=1)
    """Complaints per delivered canary message above which the rest waits for an admin."""
    max_bounce_rate: float = Field(default=0.05, ge=0, le=1)
    """Hard bounces per finished canary delivery above which the rest waits for an admin."""
    max_unsubscribe_rate: float = Field(default=0.02, ge=0, le=1)
    """Unsubscribes per delivered canary message above which the rest waits for an admin."""
    exempt_tenants: list[str] = []
    """Tenants whose campaigns are never held (a list that mails continuously, say)."""


class HttpSection(Strict):
    """The HTTP listener: `/metrics` and `/healthz`, the tenants' API (`/v1/consent`), the
    one-click unsubscribe endpoint and the abuse form."""

    address: HostPort = "127.0.0.1:9587"
    """Where it listens, in plain HTTP; keep it on a private address, behind a
    TLS-terminating proxy that exposes `/v1/` to tenants and keeps `/metrics` private."""
    trusted_proxies: list[Network] = []
    """Networks of the proxies in front of the listener: for their requests the client is
    the address they put in `X-Forwarded-For` (lockouts and the abuse form's rate limits
    count it); from anyone else the header is ignored."""


class Credential(Strict):
    """One login: a user name and the hash of its password."""

    username: str = Field(min_length=1, pattern=r"^[^\s\x00]+$")
    """The login name; unique across all tenants."""
    password_hash: str = Field(pattern=r"^\$argon2(id|i|d)\$")
    """Argon2 hash made by `relay hash-password`; plain passwords are never stored."""


class TenantLimits(Strict):
    """What one tenant may send, checked in the SMTP transaction."""

    submissions_per_minute: int = Field(default=600, ge=1)
    """Messages the tenant may submit per minute per relay process; more get `450 4.7.1`
    at MAIL. It limits submission, not delivery, hence not `messages_per_minute`, which
    names delivery-rate ceilings (formerly `[tenants.limits] messages_per_minute`, still
    read: `relay.config.renamed`)."""
    recipients_per_message: int = Field(default=100, ge=1)
    """RCPTs per transaction; more get `452 4.5.3` (the client sends them in another one),
    which do not count toward `[smtp] max_errors`."""
    max_message_size: Bytes = Field(default="25MiB", ge=1024)
    """Largest message; more get `552 5.3.4` (at MAIL when `SIZE=` says so)."""


class Identity(Strict):
    """Who sends the tenant's bulk mail (P-IDENTITY), in parts: a footer writes them in any
    order, with any separators, over lines or table cells, the country in any language."""

    name: str = Field(min_length=2)
    """Full (legal) name of the sender, e.g. `Kaffeerösterei Müller GmbH`."""
    brands: list[Annotated[str, Field(min_length=2)]] = []
    """Registered trading names; a footer may name the sender by one instead of `name`."""
    street: str = Field(min_length=2)
    """Street and number (or PO box) of the postal address or registered office."""
    postal_code: str = ""
    """Empty only where the country has none."""
    city: str = Field(min_length=2)
    """City of the postal address or registered office."""
    country: str = Field(pattern=r"^[A-Za-z]{2}$")
    """ISO 3166-1 alpha-2 code (`DE`); the footer may name the country in any language,
    or leave it out for domestic mail."""
    contact_email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    """Where recipients can write to the sender; a footer may show this or any other
    address at the tenant's domains."""
    consent_statement: str = ""
    """The sentence the tenant uses to say why recipients get its mail (P-CONSENT-NOTE);
    common phrasings in several languages are recognised without it."""

    @model_validator(mode="before")
    @classmethod
    def _address_in_parts(cls, value: object) -> object:
        if isinstance(value, dict) and "postal_address" in value:
            raise ValueError(
                "postal_address is now written in parts: street, postal_code, city, country"
            )
        return value

    @field_validator("country")
    @classmethod
    def _known_country(cls, code: str) -> str:
        from babel import Locale

        if code.upper() not in Locale("en").territories:
            raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 country code")
        return code.upper()


class TenantSection(Strict):
    """A tenant: who may submit for it, from which domains, and how its mail is treated. It
    needs credentials, trusted networks or both."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    """Tenant name in logs, metrics and the queue (lower-case letters, digits, `_`, `.` and
    `-`, not starting with a punctuation mark); unique."""
    domains: list[str] = Field(min_length=1)
    """Sending domains; MAIL FROM must be one of them or a subdomain (P-HDR-ALIGN)."""
    credentials: list[Credential] = []
    """SMTP AUTH logins of this tenant."""
    networks: list[Network] = []
    """Client networks trusted without AUTH (devices that cannot log in, like Postfix's
    mynetworks), e.g. `["192.0.2.0/24"]`."""
    limits: TenantLimits = TenantLimits()
    """Per-tenant limits; keys left out keep their defaults."""
    stream: Literal["transactional", "bulk", "mixed"] = "transactional"
    """What the tenant sends. Bulk (newsletters, marketing) faces the stricter rules; a message
    with Precedence: bulk|list, List-Id or Feedback-ID counts as bulk whatever this says."""
    verified: bool = False
    """Whether the tenant's identity has been verified; unverified tenants send no bulk
    (P-AUTH)."""
    identity: Identity | None = None
    """Required for bulk mail (P-IDENTITY)."""
    unsubscribe: Literal["tenant", "relay"] = "tenant"
    """P-UNSUB: `tenant` sends its own List-Unsubscribe headers; `relay` lets the relay add
    its own signed one-click URI (`[policy] unsubscribe_url`) where they are missing, to
    messages with one recipient."""
    require_consent: bool = True
    """Bulk mail only to recipients with a consent record (P-CONSENT-RECORD); the strict
    default. Import records with `relay consent import`."""
    suspended: str = ""
    """Empty: active. Otherwise the reason the tenant is suspended (P-SUSPEND): its
    submissions are refused with it, and its queued mail is held, not delivered, until an
    admin clears it (reload) or deletes the mail (`relay queue delete`)."""
    policy_skip: list[Annotated[str, Field(pattern=r"^P-[A-Z-]+$")]] = []
    """Policy rules (P-IDs) not applied to this tenant; the default applies them all."""
    return_path_domain: str = ""
    """Domain of the envelope sender of this tenant's deliveries (VERP): each delivery goes
    out from `b-TOKEN@return_path_domain`, TOKEN signed and naming the delivery, so an
    asynchronous bounce maps back to the exact recipient. Its MX must point at the relay's
    feedback listener; a subdomain of a tenant domain (`bounce.shop.example`) keeps SPF
    aligned for DMARC. Empty: the tenant's own MAIL FROM, and its bounces go to it. Unique
    across tenants."""
    webhook_url: str = Field(default="", pattern=r"^(https?://\S+)?$")
    """Where the tenant's events are POSTed, batched as JSON and signed (HMAC-SHA256)."""
    webhook_secret_file: str = ""
    """File holding the webhook signing secret (16 bytes or more); required with webhook_url."""
    webhook_private: bool = False
    """Allow a webhook on http or at a private address (an in-house receiver); otherwise
    only https to a public address is posted to, the address checked at connect time."""

    @field_validator("domains")
    @classmethod
    def _lower_domains(cls, domains: list[str]) -> list[str]:
        """As lower-case IDNA A-labels, the form envelope and header domains are compared in."""
        return [_a_label(d) for d in domains]

    @field_validator("return_path_domain")
    @classmethod
    def _lower_return_path(cls, domain: str) -> str:
        return _a_label(domain) if domain else ""

    @model_validator(mode="after")
    def _webhook_secret(self) -> "TenantSection":
        if self.webhook_url and not self.webhook_secret_file:
            raise ValueError("webhook_url needs webhook_secret_file (the signing secret)")
        if self.webhook_url.startswith("http://") and not self.webhook_private:
            raise ValueError("webhook_url must be https, unless webhook_private = true")
        return self

    @model_validator(mode="after")
    def _can_submit(self) -> "TenantSection":
        if not self.credentials and not self.networks:
            raise ValueError("a tenant needs credentials or networks, or it can never submit")
        return self


class SiteSection(Strict):
    """Limits of one destination site (the registered domain of its MX hosts), overriding
    the shipped list and the `[delivery]` defaults; keys left out keep those."""

    name: str
    """The site: the registered domain of its MX hosts (`google.com` serves gmail.com and
    googlemail.com); unique."""
    connections: int | None = Field(default=None, ge=1)
    """Parallel connections per relay process."""
    messages_per_connection: int | None = Field(default=None, ge=1)
    """Messages sent over one connection before it is closed."""
    messages_per_minute: float | None = Field(default=None, gt=0)
    """Ceiling for all relay processes together."""

    @field_validator("name")
    @classmethod
    def _lower(cls, name: str) -> str:
        return _a_label(name)


class RouteSection(Strict):
    """A destination domain delivered to a fixed host instead of its MX hosts. A route may
    name any host, a private one too (`[delivery] private_mx` does not apply)."""

    domain: str
    """Destination domain (exact match, case-insensitive), like a Postfix transport map entry;
    unique."""
    host: str
    """Deliver there instead of the domain's MX hosts."""
    port: int = Field(default=25, ge=1, le=65535)
    """Port on `host`."""

    @field_validator("domain")
    @classmethod
    def _lower(cls, domain: str) -> str:
        return _a_label(domain)


class Config(Strict):
    relay: RelaySection = RelaySection()
    queue: QueueSection = QueueSection()
    tls: TlsSection = TlsSection()
    listeners: list[ListenerSection] = Field(min_length=1)
    smtp: SmtpSection = SmtpSection()
    delivery: DeliverySection = DeliverySection()
    dkim: DkimSection = DkimSection()
    policy: PolicySection = PolicySection()
    http: HttpSection = HttpSection()
    feedback: FeedbackSection = FeedbackSection()
    reputation: ReputationSection = ReputationSection()
    canary: CanarySection = CanarySection()
    tenants: list[TenantSection] = []
    routes: list[RouteSection] = []
    sites: list[SiteSection] = []

    @model_validator(mode="after")
    def _unsubscribe_endpoint(self) -> "Config":
        relayed = [t.name for t in self.tenants if t.unsubscribe == "relay"]
        if relayed and not self.policy.unsubscribe_url:
            raise ValueError(
                f'tenants {", ".join(relayed)} use unsubscribe = "relay": '
                "set [policy] unsubscribe_url"
            )
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> "Config":
        for what, names in (
            ("listeners", [x.name for x in self.listeners]),
            ("tenants", [t.name for t in self.tenants]),
            ("usernames", [c.username for t in self.tenants for c in t.credentials]),
            ("routes", [r.domain for r in self.routes]),
            ("sites", [s.name for s in self.sites]),
            (
                "return_path_domain",
                [t.return_path_domain for t in self.tenants if t.return_path_domain],
            ),
        ):
            dupes = sorted(n for n, count in Counter(names).items() if count > 1)
            if dupes:
                raise ValueError(f"{what} must be unique, repeated: {', '.join(dupes)}")
        return self
