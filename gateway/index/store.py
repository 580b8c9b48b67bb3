"""The canonical index's operations as the rest of the product calls them (the pipeline's dispatch,
the review queue, the benchmarks). Each takes a Connection so that it runs inside the
exchange's transaction, together with the audit entry that records it. This module only names
them; where each is written down:

- gateway.index.deciding: who is who. Why a record links to a child, goes to review or is a new
  child (``_decide`` and its rules), why it is rejected, the review queue's pairs, the linkage
  model scaled to the index's size.
- gateway.index.writing: the rows. A child's row with what it shows and who supplied each value
  (provenance), its source records and involvements, the blocking keys (blind indexes) it is
  filed under, and the bulk loader's rows.
- gateway.index.batches: a SubmitUpdates (a push) applied, one answer per record.
- gateway.index.reading: FindChild, GetContacts, shielding a child.
- gateway.index.legacy: carrying data over from before migration 0005.
"""

from gateway.index.batches import LOCK_BUCKETS, NOT_STORED, apply_updates
from gateway.index.deciding import (
    COMPARED_PER_RECORD, COMPARED_SOURCES_PER_CHILD, DEFAULT_POLICY, MODEL_REFRESH_S, LinkPolicy, comparison_json,
    demographic_comparison, is_distinct, scoring_model,
)
from gateway.index.legacy import adopt_legacy_rows, restore_legacy_identifiers
from gateway.index.reading import (
    MAX_CANDIDATES, ChildRows, child_rows, child_view, children_row, find_children, get_child, involvements_row,
    resolve, set_shielding,
)
from gateway.index.writing import MAX_MERGE_HOPS, BulkSource, bulk_rows, linkage_plain_type, provenance, sent_source_id

__all__ = [
    "LOCK_BUCKETS", "NOT_STORED", "apply_updates",
    "COMPARED_PER_RECORD", "COMPARED_SOURCES_PER_CHILD", "DEFAULT_POLICY", "MODEL_REFRESH_S", "LinkPolicy",
    "comparison_json", "demographic_comparison", "is_distinct", "scoring_model",
    "adopt_legacy_rows", "restore_legacy_identifiers",
    "MAX_CANDIDATES", "ChildRows", "child_rows", "child_view", "children_row", "find_children", "get_child",
    "involvements_row", "resolve", "set_shielding",
    "MAX_MERGE_HOPS", "BulkSource", "bulk_rows", "linkage_plain_type", "provenance", "sent_source_id",
]
