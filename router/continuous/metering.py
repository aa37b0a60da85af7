"""The key's rate limit on routes other than chat (the dry run, feedback, status, models).

`metered` is the caller's key, counted as one request of its rpm window at no cost, so a key
refused on chat is refused there too (429) and a flood of dry runs cannot run the classifier
unchecked. The app's Limiter is `app.state.limiter` (None without Redis or with auth off). A
team over its budget may still ask these routes (they spend nothing): that refusal is let pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

from router.errors import BudgetExceeded
from router.finance.access import caller

if TYPE_CHECKING:
    from router.finance.keys import KeyInfo


async def metered(request: Request) -> KeyInfo | None:
    """The caller's key (None with auth off), refused with a 429 past its rpm limit."""
    key = await caller(request)
    limiter = getattr(request.app.state, "limiter", None)
    if key is None or limiter is None:
        return key
    try:
        reservation = await limiter.admit(key, 0, 0)
    except BudgetExceeded:
        return key
    await limiter.settle(reservation, 0, 0)  # nothing reserved: release it at once
    return key
