"""A worker's memory stays flat under load: no cache that lives as long as the process holds more
than a few thousand of the values messages bring (names, postcodes, records), however many distinct
ones arrive. bench/soak.py shows the worker's memory over time; this shows the cause stays fixed
(issue 24: caches of 65,536 names each and 20,000 records grew each worker ~5 MB a minute)."""

from __future__ import annotations

import functools
import json
import inspect
import sys

import pytest

import gateway.app  # noqa: F401  (what a worker loads)
import gateway.server  # noqa: F401
from gateway.index import linkage, writing

#: Most entries any per-value cache in a worker may hold.
MOST_ENTRIES = 1024
#: Caches of something other than messages' values, bounded by what they are keyed on.
BOUNDED_BY_KEY = {
    "gateway.store.embedded._count_upsert": "one statement per number of rate-limit keys a message counts",
}


def process_caches() -> list[tuple[str, functools._lru_cache_wrapper]]:
    found = []
    for name, module in list(sys.modules.items()):
        if name != "gateway" and not name.startswith("gateway."):
            continue
        for attr in vars(module).values():
            if isinstance(attr, functools._lru_cache_wrapper) and attr.__module__ == name:
                found.append((f"{name}.{attr.__qualname__}", attr))
    return found


def takes_values(cached) -> bool:
    return bool(inspect.signature(cached.__wrapped__).parameters)


def test_no_process_wide_cache_holds_more_than_a_few_thousand_values():
    caches = [(name, cached) for name, cached in process_caches() if takes_values(cached)]
    assert len(caches) >= 8  # the linkage's caches are among them
    too_big = {name: cached.cache_parameters()["maxsize"] for name, cached in caches
               if name not in BOUNDED_BY_KEY
               and (cached.cache_parameters()["maxsize"] is None or cached.cache_parameters()["maxsize"] > MOST_ENTRIES)}
    assert not too_big


def test_many_distinct_records_leave_the_caches_no_larger_than_their_bound():
    """Records as a push brings them, each child's names, postcode and address its own."""
    for n in range(MOST_ENTRIES + 500):
        record = {"identity": {"family_name": f"Family{n:05d}x", "given_names": [f"Given{n:05d}y"],
                               "date_of_birth": "2015-01-01"},
                  "address": {"lines": [f"{n} Road{n} Street"], "postcode": f"LS{n % 99} {n % 9}AA{n}"}}
        writing._person_and_keys(json.dumps(record))
        linkage.blocking_keys(linkage.person_from_record(record))
    sizes = {name: cached.cache_info().currsize for name, cached in process_caches() if takes_values(cached)}
    assert max(sizes.values()) <= MOST_ENTRIES, sizes
