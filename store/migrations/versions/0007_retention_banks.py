"""retention and banks: the yearly continuation question, on hold, closed; imported hash banks

Revision ID: 0007
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('continuation_asked_on', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('continued_on', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('held_on', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('closed_on', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('bank', sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_column('bank')
        batch_op.drop_column('closed_on')
        batch_op.drop_column('held_on')
        batch_op.drop_column('continued_on')
        batch_op.drop_column('continuation_asked_on')
