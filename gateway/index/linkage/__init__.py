"""Record linkage: who is who in the index.

The per-record path (SubmitUpdates, FindChild) is in-process and bounded:

1. ``Person`` — the comparable, normalised view of a record (``person_from_update``,
   ``person_from_record`` for a stored record).
2. ``blocking_keys(person)`` — the indexed keys a child is filed under (rows of the
   ``blocking_keys`` table); ``query_keys(query)`` the keys a FindChild query looks under. Only
   equality lookups are made on keys, so a later change can turn every key into a keyed hash.
3. ``compare(a, b)`` — field agreement levels and Fellegi–Sunter match weights from the versioned
   model (``model.json``), a match probability, and the twin guard.
4. ``query_score(query, person)`` — FindChild's 0–100 score.

This module is the interface; the parts live in the submodules.
"""

from __future__ import annotations

from gateway.index.linkage.person import Person, person_from_query, person_from_record, person_from_update  # noqa: F401
from gateway.index.linkage.blocking import IDENTIFIER_KEY_PREFIXES, blocking_keys, query_keys  # noqa: F401
from gateway.index.linkage.scoring import (  # noqa: F401
    Comparison, Model, compare, default_model, query_match, query_score,
)
