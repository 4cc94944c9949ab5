"""Signatures per second on one core: relay.dkim.sign against plain dkimpy.

    python -m bench.dkim_sign [--seconds 2]

For RSA-2048 and Ed25519 on 2 KB, 20 KB and 100 KB messages (a text newsletter body),
each signer runs for `--seconds` per cell in this process; the table and the ratios are
printed and written to bench/results/dkim-latest.json and a dated copy.
"""

import argparse
import time
from collections.abc import Callable

import dkim
from cryptography.hazmat.primitives import serialization

from bench.load import newsletter_text
from bench.results import write_results
from relay.dkim.keys import generate
from relay.dkim.sign import SigningKey, sign

SIZES = {"2KB": 2_000, "20KB": 20_000, "100KB": 100_000}


def message(size: int) -> bytes:
    head = (
        b"From: News <news@acme.example>\r\nTo: alice@inbox.example\r\n"
        b"Subject: This week at Acme\r\nDate: Mon, 23 Nov 2026 22:00:00 +0000\r\n"
        b"Message-ID: <bench@acme.example>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    return head + newsletter_text(size, size - len(head))


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of `fn`, over at least `seconds` of CPU time."""
    fn()
    calls, start = 0, time.process_time()
    while (elapsed := time.process_time() - start) < seconds:
        fn()
        calls += 1
    return calls / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    rows = []
    for algorithm in ("rsa", "ed25519"):
        key = generate(algorithm)  # type: ignore[arg-type]
        ours = SigningKey("acme.example", "bench", key)
        if algorithm == "rsa":
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            dkimpy_alg = b"rsa-sha256"
        else:
            import base64

            raw = key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            pem, dkimpy_alg = base64.b64encode(raw), b"ed25519-sha256"
        for label, size in SIZES.items():
            msg = message(size)
            relay_rate = rate(lambda m=msg, k=ours: sign(m, [k]), args.seconds)
            dkimpy_rate = rate(
                lambda m=msg, p=pem, a=dkimpy_alg: dkim.sign(
                    m, b"bench", b"acme.example", p, canonicalize=(b"relaxed", b"relaxed"),
                    signature_algorithm=a,
                ),
                args.seconds,
            )  # fmt: skip
            rows.append(
                {
                    "algorithm": algorithm,
                    "size": label,
                    "relay_per_s": round(relay_rate, 1),
                    "dkimpy_per_s": round(dkimpy_rate, 1),
                    "ratio": round(relay_rate / dkimpy_rate, 2),
                    "relay_ms": round(1000 / relay_rate, 3),
                }
            )
    print(f"{'algorithm':10} {'size':6} {'relay/s':>10} {'dkimpy/s':>10} {'ratio':>7} {'ms':>7}")
    for r in rows:
        print(
            f"{r['algorithm']:10} {r['size']:6} {r['relay_per_s']:>10} {r['dkimpy_per_s']:>10} "
            f"{r['ratio']:>6}x {r['relay_ms']:>7}"
        )
    write_results("dkim", {"seconds_per_cell": args.seconds, "rows": rows})


if __name__ == "__main__":
    main()
