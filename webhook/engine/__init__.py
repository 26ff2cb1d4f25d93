"""Decision logic: pure, synchronous functions of (request, policy set) -> Decision.

Nothing here does I/O or imports aiohttp; the server and the CLI call the same
functions, so they can never disagree.
"""

from webhook.engine.mutate import mutate
from webhook.engine.validate import validate

__all__ = ["mutate", "validate"]
