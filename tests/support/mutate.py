"""Seeded byte-level damage for the feedback parsers' robustness tests."""

import random


def mutate(rng: random.Random, data: bytes) -> bytes:
    """Random byte-level damage: flips, cuts, insertions, duplicated chunks, MIME debris."""
    debris = [b"\r\n", b"\n\n", b"--", b";", b"=?utf-8?q?", b"\x00", b"\xff\xfe", b"<", b"@"]
    debris += [b"Content-Type: message/rfc822\n\n", b"boundary=", b"> ", b"\\x{110000}", b"(((("]
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not buffer:
            break
        at = rng.randrange(len(buffer))
        match rng.randrange(6):
            case 0:
                buffer[at] = rng.randrange(256)
            case 1:
                del buffer[at : at + rng.randint(1, 64)]
            case 2:
                buffer[at:at] = rng.randbytes(rng.randint(1, 16))
            case 3:
                del buffer[at:]
            case 4:
                start = rng.randrange(len(buffer))
                buffer[at:at] = buffer[start : start + rng.randint(1, 200)]
            case _:
                buffer[at:at] = rng.choice(debris)
    return bytes(buffer)
