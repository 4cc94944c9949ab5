"""The message data a process holds in memory at once, all sessions together.

aiosmtpd-style servers keep a message in memory from DATA until it is queued; without a
bound, a few clients sending the largest messages at once decide how much memory the
process needs (four 25 MB messages at once made it several times larger). The budget is counted in
bytes as they are read, so a message is refused (`452 4.3.1`, RFC 3463: mail system full,
a temporary condition) the moment it would pass it, whatever SIZE the client declared;
peak memory is then a small multiple of `[smtp] data_in_flight` (the policy reading, the
DKIM-signed copy and the compressed copy sent to PostgreSQL come on top of the data).
"""

from dataclasses import dataclass


@dataclass
class DataBudget:
    limit: int
    held: int = 0

    def take(self, size: int) -> bool:
        """Hold `size` more bytes if they fit."""
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size

    def fits(self, size: int) -> bool:
        """Whether a message of `size` bytes (a SIZE declared at MAIL) fits now."""
        return self.held + size <= self.limit


class Held:
    """What one DATA transfer holds of the budget; all given back by `release`."""

    def __init__(self, budget: DataBudget) -> None:
        self.budget = budget
        self.size = 0

    def take(self, size: int) -> bool:
        if not self.budget.take(size):
            return False
        self.size += size
        return True

    def release(self) -> None:
        self.budget.give(self.size)
        self.size = 0
