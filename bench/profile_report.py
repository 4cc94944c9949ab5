"""`python -m bench.profile_report FILE [N]`: read py-spy's collapsed stacks (`-f raw`).

Prints the share of samples per part of the relay (the first listed part a stack passes
through), then the N functions with the most samples inclusive and on their own (self).
"""

import re
import sys
from collections import Counter

PARTS = (
    ("DKIM signing", r"relay/dkim/"),
    ("policy pipeline", r"relay/policy/"),
    ("delivery (aiosmtplib included)", r"relay/delivery/|aiosmtplib"),
    ("group commit", r"Enqueuer|insert_messages"),
    ("feedback and side tasks", r"relay/feedback/"),
    ("submission handler", r"relay/smtp/handler|relay/accept"),
    ("SMTP sessions (aiosmtpd)", r"relay/smtp/|aiosmtpd"),
    ("asyncpg elsewhere", r"asyncpg"),
)
_PATH = re.compile(r" \(/[^ ]*?/(?:site-packages|main)/")


def read(path: str) -> list[tuple[list[str], int]]:
    stacks = []
    with open(path) as lines:
        for line in lines:
            stack, _, count = line.rstrip().rpartition(" ")
            stacks.append(([_PATH.sub(" (", f) for f in stack.split(";")], int(count)))
    return stacks


def report(stacks: list[tuple[list[str], int]], top: int) -> str:
    total = sum(n for _, n in stacks) or 1
    parts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for frames, n in stacks:
        name = next(
            (label for label, pattern in PARTS if any(re.search(pattern, f) for f in frames)),
            "event loop and the rest",
        )
        parts[name] += n
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    out = [f"{total} samples", "", "by part:"]
    out += [f"{100 * n / total:5.1f}%  {name}" for name, n in parts.most_common()]
    out += ["", "inclusive:"]
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    out += ["", "self:"]
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(out)


if __name__ == "__main__":
    print(report(read(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 40))
