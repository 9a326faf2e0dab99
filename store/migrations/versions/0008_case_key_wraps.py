"""case key wraps: what is hers opens only with her case key (issue 14)

A case's seal key (X25519 public half derived from its case key), a capture's data key
sealed to each case it matched, a matched media's signals under keys that only the case key opens. (A notice's archive
keeps its column: a new layout in it is sealed to the case, workers.takedown.notify.)

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seal_key', sa.LargeBinary(), nullable=True))
    with op.batch_alter_table('media', schema=None) as batch_op:
        batch_op.add_column(sa.Column('case_signals', sa.LargeBinary(), nullable=True))
    op.create_table(
        'capture_keys',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('capture_id', sa.Integer(), nullable=False),
        sa.Column('case_id', sa.Integer(), nullable=False),
        sa.Column('sealed', sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(['capture_id'], ['captures.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('capture_id', 'case_id'),
    )
    with op.batch_alter_table('capture_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_capture_keys_capture_id'), ['capture_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_capture_keys_case_id'), ['case_id'], unique=False)


def downgrade() -> None:
    op.drop_table('capture_keys')
    with op.batch_alter_table('media', schema=None) as batch_op:
        batch_op.drop_column('case_signals')
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_column('seal_key')
