"""The console's gate in front of password checks: what a flood of sign-in attempts costs.

Every checked sign-in (and step-up) costs one argon2id verification, ~0.1-0.5 s of a core, on
purpose and the same on every path (gateway.officers). Anyone who can reach the console could
otherwise keep its threads and cores busy with them, and the officers' pages with them. So, in each
console process, before any check and whatever the officer id (the answer says nothing of it):

- **per address**, a token bucket: ``CONTACTGATE_SIGNIN_PER_MINUTE`` attempts a minute (default
  10), as many at once; an address over it is refused (429, ``Retry-After``) without a check. The
  address is counted as failures are (an IPv6 address by its /64: gateway.officers.source_key).
  The first refusal of a run is audited (``officer.login`` refused "unchecked: ... throttled"),
  the rest only in the access log, so a flood is one audit write per address per refill, not one an
  attempt.
- **per process**, at most ``CONTACTGATE_SIGNIN_CONCURRENCY`` checks at a time (default 2, and
  always fewer than the process's threads): an attempt that finds them all busy is refused at once
  (503, ``Retry-After``), unchecked and unaudited, so that a flood from many addresses leaves
  threads for every other page and for officers already signed in.

The buckets live in the process's memory (each console worker has its own: with 2 workers an
address may make twice the rate), for at most MAX_SOURCES addresses: past that the least recently
seen is forgotten. Their clock is the console's (injected in tests); a clock that goes back counts
as no time passing.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import math
import threading
from typing import Callable, Iterator

from gateway.officers import source_key

MAX_SOURCES = 10_000


@dataclasses.dataclass(frozen=True)
class Refusal:
    """An attempt refused before any check: ``status`` 429 (this address is over its rate) or 503
    (every check of this process is busy); ``retry_after`` in whole seconds; ``first`` when it is the
    first refusal of the address since its last admitted attempt (what is audited)."""

    status: int
    retry_after: int
    source: str
    first: bool = False


@dataclasses.dataclass
class _Bucket:
    tokens: float
    at: dt.datetime
    refusing: bool = False


class SignInGate:
    def __init__(self, per_minute: int, concurrency: int, clock: Callable[[], dt.datetime]):
        self.capacity = float(per_minute)
        self.per_second = per_minute / 60.0
        self.concurrency = concurrency
        self._clock = clock
        self._buckets: collections.OrderedDict[str, _Bucket] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._checks = threading.BoundedSemaphore(concurrency)

    @classmethod
    def from_settings(cls, settings, clock: Callable[[], dt.datetime]) -> "SignInGate":
        """The settings' limits, with at least one thread of the process left for other pages."""
        return cls(settings.signin_per_minute, max(1, min(settings.signin_concurrency, settings.threads - 1)), clock)

    def _take(self, source: str) -> Refusal | None:
        now = self._clock()
        with self._lock:
            bucket = self._buckets.pop(source, None)
            if bucket is None:
                bucket = _Bucket(self.capacity, now)
            else:
                elapsed = max(0.0, (now - bucket.at).total_seconds())
                bucket.tokens = min(self.capacity, bucket.tokens + elapsed * self.per_second)
                bucket.at = now
            self._buckets[source] = bucket  # the most recently seen last
            while len(self._buckets) > MAX_SOURCES:
                self._buckets.popitem(last=False)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                bucket.refusing = False
                return None
            first, bucket.refusing = not bucket.refusing, True
            wait = math.ceil((1.0 - bucket.tokens) / self.per_second)
            return Refusal(429, max(1, wait), source, first)

    @contextlib.contextmanager
    def attempt(self, address: str | None) -> Iterator[Refusal | None]:
        """Yields None when the attempt may be checked (a check's place is held until the block
        ends), or the Refusal to answer without a check."""
        source = source_key(address)
        refusal = self._take(source)
        if refusal is not None:
            yield refusal
            return
        if not self._checks.acquire(blocking=False):
            yield Refusal(503, 1, source)
            return
        try:
            yield None
        finally:
            self._checks.release()
