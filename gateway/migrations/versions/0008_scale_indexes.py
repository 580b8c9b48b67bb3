"""Indexes for national scale (bench/index_scale.py; docs/operations.md "Sizing").

The review queue was found only through ``ix_review_queue_status``: every record in the review
band asked "is this pair already open?" (gateway.index.deciding._queue_for_review) by reading every
open pair and filtering, and a merge or unmerge (gateway.index.review) looked for the pairs that
name a child through either column by reading the whole queue. With about 1 % of children held
in an open pair that is ~120,000 rows read per question at 12 million children.

- ``ix_review_queue_pair`` (child_id, candidate_child_id): the pair, and the child's own pairs;
- ``ix_review_queue_candidate`` (candidate_child_id): the pairs a child is the candidate of.

Every other hot query (GetContacts, FindChild, SubmitUpdates) already uses an index: the plans are
in docs/operations.md.

Revision ID: 0008
Revises: 0007
"""
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("review_queue", schema=None) as batch_op:
        batch_op.create_index("ix_review_queue_pair", ["child_id", "candidate_child_id"], unique=False)
        batch_op.create_index("ix_review_queue_candidate", ["candidate_child_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("review_queue", schema=None) as batch_op:
        batch_op.drop_index("ix_review_queue_candidate")
        batch_op.drop_index("ix_review_queue_pair")
