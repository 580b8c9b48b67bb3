"""Step 5: replay and idempotency.

A message is named by its organisation and the hash of its canonical SignedInfo (what was signed,
not how the signature is spelled), and remembered until its Timestamp could no longer be accepted.
A read answered before is refused as a replay. A SubmitUpdates answered before gets the first
answer again, without being applied twice. A refused message leaves no claim behind (a refusal
changes nothing), so its copies are judged afresh.
"""

from __future__ import annotations

import math
import time

from gateway.errors import Replay, Unavailable
from gateway.pipeline.context import Exchange, Services

IDEMPOTENT_OPERATIONS = frozenset({"SubmitUpdates"})
FIRST_ANSWER_WAIT_S = 10.0


def ttl_seconds(exchange: Exchange) -> int:
    return max(1, math.ceil((exchange.timestamp_expires - exchange.received_at).total_seconds()) + 1)


def check_replay(exchange: Exchange, services: Services) -> bytes | None:
    """None for a new message; for a repeated SubmitUpdates, the stored first answer."""
    exchange.replay_key = f"{exchange.org_code}:{exchange.signature_id}"
    if services.store.claim(exchange.replay_key, ttl_seconds(exchange)):
        exchange.claimed = True
        return None
    if exchange.operation not in IDEMPOTENT_OPERATIONS:
        raise Replay("read message received before")
    # The first copy is being processed: wait for its answer. If it was refused (nothing applied,
    # claim released), this copy takes the claim and runs.
    deadline = time.monotonic() + FIRST_ANSWER_WAIT_S
    while True:
        answer = services.store.get_response(exchange.replay_key)
        if answer is not None:
            return answer
        if services.store.claim(exchange.replay_key, ttl_seconds(exchange)):
            exchange.claimed = True
            return None
        if time.monotonic() > deadline:
            raise Unavailable("the first copy of this message is still being processed")
        time.sleep(0.05)
