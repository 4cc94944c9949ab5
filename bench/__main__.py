"""`python -m bench`: the relay and Postfix side by side on loopback (see bench/README.md).

    python -m bench [--install] [--quick] [--repeat 3] [--faults] [--dsn DSN]

Prints a table of medians with min-max spreads and the relay/Postfix ratios, and writes
bench/results/side-by-side-latest.json and a dated copy.
"""

import argparse
import os
import sys
import time
import traceback

from bench import faults, postfix, side_by_side
from bench.results import write_results


def _sizes(text: str) -> list[int]:
    return [int(float(part.lower().removesuffix("kb")) * 1024) for part in text.split(",")]


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def parse(argv: list[str]) -> tuple[argparse.Namespace, side_by_side.Plan]:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--install",
        action="store_true",
        help="install Debian's postfix package if it is missing (root)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 KB, 20 sessions, 1,000 messages, one repeat (a few minutes)",
    )
    parser.add_argument("--repeat", type=int, help="repeats of every measurement (default 3)")
    parser.add_argument("--messages", type=int, help="messages per cell (default 5000)")
    parser.add_argument("--sizes", type=_sizes, help="payload sizes in KB (default 2,20,100)")
    parser.add_argument("--sessions", type=_ints, help="parallel sessions (default 20,200)")
    parser.add_argument(
        "--latency-seconds", type=float, help="length of each latency run (default 10)"
    )
    parser.add_argument("--faults", action="store_true", help="also run the fault scenarios")
    parser.add_argument(
        "--fault-messages", type=int, help="messages of the kill -9 run (default 20000)"
    )
    parser.add_argument("--only-faults", action="store_true", help="skip the measurements")
    parser.add_argument("--dsn", default="",
                        help="PostgreSQL for the relay instead of the embedded one "
                             "(an empty database on this machine)")  # fmt: skip
    args = parser.parse_args(argv)
    plan = side_by_side.Plan(dsn=args.dsn, faults=args.faults or args.only_faults)
    if args.quick:
        plan.sizes, plan.sessions, plan.messages, plan.repeat = [2048], [20], 1000, 1
        plan.latency_seconds, plan.fault_messages = 5.0, 2000
    for name in ("repeat", "messages", "sizes", "sessions", "latency_seconds", "fault_messages"):
        if getattr(args, name) is not None:
            setattr(plan, name, getattr(args, name))
    return args, plan


def log(line: str) -> None:
    """Progress as it happens, also when the output goes to a file."""
    print(line, flush=True)


def main(argv: list[str] | None = None) -> None:
    args, plan = parse(sys.argv[1:] if argv is None else argv)
    postfix.require(install_if_missing=args.install)
    if os.geteuid() != 0:
        raise SystemExit("run as root: Postfix's master and smtp-sink start as root")
    started = time.monotonic()
    figures: dict[str, object] = {}
    if not args.only_faults:
        figures |= side_by_side.run(plan, log)
    if plan.faults:
        try:
            figures["faults"] = faults.run(plan, log)
        except Exception as exc:  # the measurements above are kept all the same
            traceback.print_exc()
            figures["faults"] = {"error": repr(exc)}
    figures["seconds"] = round(time.monotonic() - started, 1)
    # A faults-only run has its own file, so the measurements of the last full run stay.
    path = write_results("side-by-side-faults" if args.only_faults else "side-by-side", figures)
    print(f"\n{figures['seconds']} s; results in {path} (and its -latest.json)")


if __name__ == "__main__":
    main()
