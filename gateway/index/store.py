"""Index operations. Each takes a Connection so that it runs inside the exchange's transaction,
together with the audit entry that records it.

Who is who (gateway.index.linkage): every incoming record is matched on every push.

1. The same organisation's source record id: an update of what it sent before.
2. A valid NHS number or unique pupil number already in the index: the same child, unless the rest
   of the identity disagrees (the match probability without the identifier is below the review
   band, the other identifier differs, or the pair looks like twins): then it is held for review
   like any other uncertain record (and counted as an ``identifier_conflict`` for `audit review`).
3. Otherwise the candidates filed under the record's blocking keys (never a scan) are compared
   field by field (Fellegi–Sunter, gateway/index/linkage) and the best decides: at or above the
   upper threshold, linked (``matched``); below the lower, a new child (``created``); between, a
   new child **and** the pair in the review queue, so that nothing sent is invisible while a
   person decides. A pair that looks like twins is never linked automatically.

A record held for review is answered exactly as one that is not: ``created`` with its new child's
id (``updated`` for a record the organisation sent before), no detail. Any other answer would tell
the sender that the index already holds a child like it (a push-only organisation sending a known
NHS number with other demographics would learn that the number is known). The truth is in the
result's ``held_for_review`` (the audit entry's ``review=N``) and in the queue.

Each source keeps its own record; what the index shows is derived by precedence
(gateway.index.precedence), with who supplied each value. An organisation restates its own
involvements and values only.

Lookups are index lookups at national scale: by child id, by source record, by blocking key.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import hashlib
import json
import time
from dataclasses import dataclass, replace

from sqlalchemy import bindparam, cast, delete, func, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DataError, IntegrityError

from stdnum.gb import upn

from gateway.config import Settings
from gateway.db import (
    blocking_keys, children, distinct_pairs, involvements, organisations, review_queue, source_records,
)
from gateway.index import ids, linkage, retention, sealed
from gateway.index.model import (
    Candidate, ChildUpdate, ChildView, Contact, FindQuery, Involvement,
    UnreadableUpdate, UpdateResult,
    address_from_json, carer_from_json, family_name_key, identity_from_json, locality, nhs_number_is_valid,
    normalise_name, setting_from_json,
)
from gateway.index.precedence import Source, derive
from gateway.security import vault as vault_mod
from gateway.index.writing import (  # noqa: F401 (moved there; still named here)
    MAX_MERGE_HOPS, _CHILD_BY_ID, _CHILD_FOR_UPDATE, _DELETE_SOURCE_INVOLVEMENTS,
    _DELETE_UNASSIGNED_INVOLVEMENTS, _blinded_keys, _Keys, _create_child, _shown_values, linkage_plain_type,
    _open_shown, _record_text, _store_source, _LIVE_CHILD, _lock_live_child, _refresh_child, _file_under,
    _replace_involvements, _involvement_rows, _sources, _sources_of, _person_and_keys, _most_recent_first,
    _person_of, _keys_of, provenance, sent_source_id, BulkSource, bulk_rows,
)
from gateway.index.deciding import (  # noqa: F401 (moved there; still named here)
    COMPARED_PER_RECORD, COMPARED_SOURCES_PER_CHILD, LinkPolicy, DEFAULT_POLICY, _rejection, _Hits, _key_hits,
    _decide, _linkable, _opposite_sex_twins_named_alike, _SAME_PLACE, _only_the_given_name_differs, _held_by,
    _held_under_another_first_name, _one_organisation_holds_both, _reconcile_split, _given_names_differ,
    _ANOTHER_DATE, _looks_like_a_sibling, _MODEL_FOR_SIZE, MODEL_REFRESH_S, _model_due, scoring_model,
    _compare_with, _recent_people, demographic_comparison, _identifier_verdict, is_distinct,
    _queue_for_review, comparison_json,
)
from gateway.index.batches import (  # noqa: F401 (moved there; still named here)
    _ADVISORY_LOCK, apply_updates, LOCK_BUCKETS, _LOCK_NAMESPACE, _lock_identities, NOT_STORED, _IN_CHUNK,
    _LINKED, _FILED, _ORG_KIND, _Replay, _chunks, _Batch, _as_stored, _apply_update, _apply_update_alone,
    _new_child,
)
from gateway.index.reading import (  # noqa: F401 (moved there; still named here)
    MAX_CANDIDATES, _CHILD_AND_INVOLVEMENTS, _MERGED_INTO, find_children, _candidate_rows, resolve, ChildRows,
    child_rows, child_view, children_row, involvements_row, get_child, set_shielding,
)
from gateway.index.legacy import (  # noqa: F401 (moved there; still named here)
    adopt_legacy_rows, _update_from_held, restore_legacy_identifiers,
)
