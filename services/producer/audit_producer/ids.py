"""Time-ordered audit ids (UUIDv7, RFC 9562), so new entries land at the right end of indexes."""

import os
import time
from uuid import UUID


def uuid7(at_ms: int | None = None) -> UUID:
    """48-bit Unix milliseconds (now, or `at_ms` for imported history), version 7, RFC variant, 74 random bits."""
    ms = time.time_ns() // 1_000_000 if at_ms is None else at_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF
    return UUID(int=value)
