"""Initial schema: registry, index, audit chain, embedded replay/rate store.

Revision ID: 0001
Revises: 
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_head',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('entry_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('audit_log',
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('at', sa.String(length=32), nullable=False),
    sa.Column('org_code', sa.String(length=32), nullable=True),
    sa.Column('cert_fingerprint', sa.String(length=64), nullable=True),
    sa.Column('user_id', sa.String(length=128), nullable=True),
    sa.Column('role', sa.String(length=64), nullable=True),
    sa.Column('operation', sa.String(length=64), nullable=False),
    sa.Column('reason_code', sa.String(length=40), nullable=True),
    sa.Column('reason_text', sa.Text(), nullable=True),
    sa.Column('child_ids', sa.Text(), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('fault_code', sa.String(length=32), nullable=True),
    sa.Column('request_digest', sa.String(length=44), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('entry_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('seq')
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_user', ['org_code', 'user_id'], unique=False)

    op.create_table('children',
    sa.Column('child_id', sa.String(length=19), nullable=False),
    sa.Column('shielded', sa.Boolean(), nullable=False),
    sa.Column('record', sa.Text(), nullable=False),
    sa.Column('family_name_norm', sa.String(length=100), nullable=False),
    sa.Column('date_of_birth', sa.Date(), nullable=False),
    sa.Column('nhs_number', sa.String(length=10), nullable=True),
    sa.Column('pupil_number', sa.String(length=13), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('child_id'),
    sa.UniqueConstraint('nhs_number'),
    sa.UniqueConstraint('pupil_number')
    )
    with op.batch_alter_table('children', schema=None) as batch_op:
        batch_op.create_index('ix_children_name_dob', ['family_name_norm', 'date_of_birth'], unique=False)

    op.create_table('organisations',
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('scopes', sa.String(length=200), nullable=False),
    sa.Column('expires', sa.Date(), nullable=True),
    sa.Column('proposed_by', sa.String(length=64), nullable=True),
    sa.Column('approved_by', sa.String(length=64), nullable=True),
    sa.Column('evidence', sa.Text(), nullable=True),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('code')
    )
    op.create_table('rate_counters',
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('window', sa.Integer(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('key', 'window')
    )
    op.create_table('replay_keys',
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('expires_at', sa.Integer(), nullable=False),
    sa.Column('response', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('replay_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_replay_keys_expires_at'), ['expires_at'], unique=False)

    op.create_table('review_queue',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('org_code', sa.String(length=32), nullable=False),
    sa.Column('source_record_id', sa.String(length=64), nullable=False),
    sa.Column('candidate_child_id', sa.String(length=19), nullable=False),
    sa.Column('submitted', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('audit_children',
    sa.Column('child_id', sa.String(length=19), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['seq'], ['audit_log.seq'], ),
    sa.PrimaryKeyConstraint('child_id', 'seq')
    )
    op.create_table('certificates',
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('org_code', sa.String(length=32), nullable=False),
    sa.Column('subject', sa.String(length=500), nullable=False),
    sa.Column('issuer', sa.String(length=500), nullable=False),
    sa.Column('serial', sa.String(length=64), nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=False),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=False),
    sa.Column('pem', sa.Text(), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['org_code'], ['organisations.code'], ),
    sa.PrimaryKeyConstraint('fingerprint')
    )
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_certificates_org_code'), ['org_code'], unique=False)

    op.create_table('involvements',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('child_id', sa.String(length=19), nullable=False),
    sa.Column('org_code', sa.String(length=32), nullable=False),
    sa.Column('service', sa.String(length=200), nullable=False),
    sa.Column('practitioner_name', sa.String(length=100), nullable=True),
    sa.Column('role', sa.String(length=100), nullable=True),
    sa.Column('phone', sa.String(length=32), nullable=True),
    sa.Column('email', sa.String(length=254), nullable=True),
    sa.Column('start', sa.Date(), nullable=False),
    sa.Column('end', sa.Date(), nullable=True),
    sa.Column('caf_assessment', sa.Boolean(), nullable=False),
    sa.Column('lead_professional', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['child_id'], ['children.child_id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('involvements', schema=None) as batch_op:
        batch_op.create_index('ix_involvements_child_org', ['child_id', 'org_code'], unique=False)

    op.create_table('source_records',
    sa.Column('org_code', sa.String(length=32), nullable=False),
    sa.Column('source_record_id', sa.String(length=64), nullable=False),
    sa.Column('child_id', sa.String(length=19), nullable=False),
    sa.ForeignKeyConstraint(['child_id'], ['children.child_id'], ),
    sa.PrimaryKeyConstraint('org_code', 'source_record_id')
    )
    with op.batch_alter_table('source_records', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_source_records_child_id'), ['child_id'], unique=False)
    audit_head = sa.table("audit_head", sa.column("id", sa.Integer), sa.column("seq", sa.Integer),
                          sa.column("entry_hash", sa.String))
    op.bulk_insert(audit_head, [{"id": 1, "seq": 0, "entry_hash": "0" * 64}])


def downgrade() -> None:
    with op.batch_alter_table('source_records', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_source_records_child_id'))

    op.drop_table('source_records')
    with op.batch_alter_table('involvements', schema=None) as batch_op:
        batch_op.drop_index('ix_involvements_child_org')

    op.drop_table('involvements')
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_certificates_org_code'))

    op.drop_table('certificates')
    op.drop_table('audit_children')
    op.drop_table('review_queue')
    with op.batch_alter_table('replay_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_replay_keys_expires_at'))

    op.drop_table('replay_keys')
    op.drop_table('rate_counters')
    op.drop_table('organisations')
    with op.batch_alter_table('children', schema=None) as batch_op:
        batch_op.drop_index('ix_children_name_dob')

    op.drop_table('children')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_user')

    op.drop_table('audit_log')
    op.drop_table('audit_head')
