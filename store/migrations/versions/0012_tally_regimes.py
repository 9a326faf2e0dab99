"""takedown tallies keep the legal regime and whether removal came within its deadline (issue 20)

Revision ID: 0012
Revises: 0011
"""
import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = '0004'          # takedown_tallies is made there (a branch of its own)


def upgrade() -> None:
    with op.batch_alter_table('takedown_tallies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('regime', sa.String(length=40), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('legal', sa.String(length=10), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('takedown_tallies', schema=None) as batch_op:
        batch_op.drop_column('legal')
        batch_op.drop_column('regime')
