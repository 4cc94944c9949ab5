"""What one delivery attempt means for the queue: Delivered, Retry(at) or Bounce.

RFC 5321 4.2.1: 2yz is done, 4yz is worth retrying, 5yz will never work. A network error
or a DNS failure that may pass counts as 4yz. Retries back off exponentially with jitter
(so a destination coming back is not hit by the whole backlog at one instant) up to
`retry_max`; once the queue lifetime is over, a temporary failure becomes a bounce with
status 4.4.7 (RFC 3463: delivery time expired), as Postfix's maximal_queue_lifetime does.
"""

import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class Reply:
    """An SMTP reply (remote or our own, e.g. 451 for a refused connection)."""

    code: int
    text: str
    host: str | None = None

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300

    @property
    def status(self) -> str:
        """The RFC 3463 code from the text, or one derived from the reply class."""
        match = _ENHANCED.match(self.text)
        if match and match.group(1) == str(self.code)[0]:
            return match.group(0)
        return f"{str(self.code)[0]}.0.0"


@dataclass(frozen=True)
class Delivered:
    reply: Reply
    state = "delivered"  # the delivery row's state afterwards
    kind = "delivered"  # the attempt's outcome, in the attempts table and metrics


@dataclass(frozen=True)
class Retry:
    reply: Reply
    at: datetime
    state = "queued"
    kind = "deferred"


@dataclass(frozen=True)
class Bounce:
    reply: Reply
    status: str
    state = "bounced"
    kind = "bounced"


Outcome = Delivered | Retry | Bounce


@dataclass(frozen=True)
class RetryPolicy:
    initial: float
    maximum: float

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failure: initial * 2^(n-1), capped, +-20%."""
        base = min(self.maximum, self.initial * 2 ** max(0, attempts - 1))
        return base * random.uniform(0.8, 1.2)


def decide(
    reply: Reply, *, attempts: int, expires_at: datetime, now: datetime, policy: RetryPolicy
) -> Outcome:
    """The outcome of an attempt that got `reply`; `attempts` counts this one."""
    if 200 <= reply.code < 300:
        return Delivered(reply)
    if reply.code >= 500:
        return Bounce(reply, reply.status)
    retry_at = now + timedelta(seconds=policy.delay(attempts))
    if now >= expires_at:
        return Bounce(reply, "4.4.7")
    return Retry(reply, min(retry_at, expires_at))
