"""`python -m bench.body_cost`: the CPU each step of the relay spends on a message's body, in
this process, for a small and a large message, and what a kilobyte adds.

    python -m bench.body_cost [--sizes 2048,102400] [--seconds 1]

py-spy's samples count time spent waiting for a core as well as time on it; this measures
CPU time (`time.process_time`) of each step the relay runs on the DATA text, one step at a
time, on the message smtp-source sends (`bench.load.message`: headers, then lines of X) and
on one of newsletter words (`--body text` in `bench.profile`):

- the listener (`relay.smtp`): the search for the end marker (`.\\r\\n`, as its reader
  does), the NUL and bare CR/LF check, undoing the dot-stuffing;
- the policy pipeline's DATA phase (`relay.policy`), whole (parsing, rendering the text and
  every check), and its two checks that read the whole body alone, each on a fresh parse:
  P-CONTENT (with the rendering of the text it reads) and P-SIZE's line length;
- the DKIM signature (`relay.dkim.sign`, RSA-2048): the body hash and the signature;
- delivery (`relay.delivery`): the outbound DATA text (`stuff`: the bare CR/LF check again
  and the dot-stuffing).

The difference between the two sizes, per KB, is what the relay's own code spends per byte;
set beside the relay's and Postfix's CPU per message at the same sizes (the side-by-side
bench) it says how much of the gap at large messages is the relay's Python-side work on the
body, and how much the database and the kernel. Results go to
bench/results/body-cost-latest.json and a dated copy.
"""

import argparse
from collections.abc import Callable, Coroutine
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from bench import load
from bench.dkim_sign import rate
from bench.results import write_results
from relay.config.schema import TenantSection
from relay.dkim.sign import SigningKey, sign
from relay.mail.wire import problem_in, stuff, unstuff
from relay.policy.checks.content import ProhibitedContent
from relay.policy.checks.size import LineLength
from relay.policy.context import PolicyContext
from relay.policy.pipeline import Pipeline

TENANT = TenantSection(name="bench", domains=["bench.example"], networks=["127.0.0.0/8"])
"""As in the side-by-side bench: a transactional tenant, trusted by its network."""


def _sync(coroutine: Coroutine[Any, Any, object]) -> object:
    """Run a coroutine that never waits (the DATA checks, with no database to ask) to its
    end, without the cost of an event loop per call."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("the step waited for something")


def steps(raw: bytes) -> dict[str, Callable[[], object]]:
    """Each step, as the relay runs it on the DATA text `raw` (unstuffed, CRLF endings)."""
    pipeline = Pipeline()
    content = ProhibitedContent()
    key = SigningKey("bench.example", "bench", rsa.generate_private_key(65537, 2048))
    wire = b"\r\n" + raw + b".\r\n"

    def context() -> PolicyContext:
        return PolicyContext(TENANT, f"load@{TENANT.domains[0]}", ["rcpt@sink.example"], raw)

    def check(step: ProhibitedContent | LineLength) -> Callable[[], object]:
        return lambda: _sync(step.check(context()))

    return {
        "listener: end-marker search": lambda: wire.find(b".\r\n", 2),
        "listener: NUL and bare CR/LF check": lambda: problem_in(raw),
        "listener: undo dot-stuffing": lambda: unstuff(raw),
        "policy: DATA phase, whole": lambda: _sync(pipeline.run("data", context())),
        "policy: P-CONTENT alone (with parse and render)": check(content),
        "policy: P-SIZE line length alone (with parse)": check(LineLength()),
        "policy: parse alone": lambda: context().message,
        "DKIM: RSA-2048 signature": lambda: sign(raw, [key], crlf_checked=True),
        "delivery: outbound DATA text": lambda: stuff(raw),
    }


def measure(size: int, body: str, seconds: float) -> dict[str, float]:
    """Microseconds of CPU per message for each step."""
    raw = load.message("<body-cost@bench.example>", size, body)
    assert problem_in(raw) is None
    return {name: 1e6 / rate(fn, seconds) for name, fn in steps(raw).items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.body_cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", default="2048,102400", help="two payload sizes in bytes")
    parser.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per step")
    args = parser.parse_args()
    small, large = (int(x) for x in args.sizes.split(","))
    figures: dict[str, dict[str, dict[str, float]]] = {}
    for body in ("x", "text"):
        figures[body] = {str(size): measure(size, body, args.seconds) for size in (small, large)}
    kb = (large - small) / 1024
    print(f"CPU us per message, and per KB between {small} and {large} bytes")
    print(f"{'step':52s} {'body':>5s} {small:>9d} {large:>9d} {'per KB':>8s}")
    for body, by_size in figures.items():
        for name in by_size[str(small)]:
            low, high = by_size[str(small)][name], by_size[str(large)][name]
            print(f"{name:52s} {body:>5s} {low:9.1f} {high:9.1f} {(high - low) / kb:8.2f}")
    path = write_results(
        "body-cost", {"sizes": [small, large], "us_per_message": figures, "seconds": args.seconds}
    )
    print(f"results in {path} (and body-cost-latest.json)")


if __name__ == "__main__":
    main()
