"""Names the projector and the query service agree on about the read model itself."""

from typing import Final

SWAP_CHANNEL: Final = "audit_read_model_swapped"
"""PostgreSQL NOTIFY channel; payload: the schema name a rebuild was just renamed to. The query service recycles
its connections on it, so no session keeps state from before the swap."""

__all__ = ["SWAP_CHANNEL"]
