"""The projector process's garbage-collector settings, set once at start by the commands that project."""

import gc
from typing import Final

YOUNG_COLLECTION_EVERY: Final = 50_000
"""Allocations between two collections of the youngest generation (CPython's default is 700)."""


def tune_gc() -> None:
    """Collect cycles less often and never re-scan what start-up built. A batch allocates some ten objects per
    record, nearly all freed by reference counting once the batch commits; at CPython's default a young collection
    ran every ~70 records and walked the batch in flight each time (a third of the decode stage's time)."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, old)


__all__ = ["YOUNG_COLLECTION_EVERY", "tune_gc"]
