"""legal regimes (issue 20): what chooses a domain's regimes, each notice's regime and legal deadline

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('domains', schema=None) as batch_op:
        for name in ('designated', 'dsa', 'take_it_down'):
            batch_op.add_column(sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('takedowns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('regime', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('legal_deadline_at', sa.DateTime(), nullable=True))
    with op.batch_alter_table('notices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('regime', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('deadline_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('notices', schema=None) as batch_op:
        batch_op.drop_column('deadline_at')
        batch_op.drop_column('regime')
    with op.batch_alter_table('takedowns', schema=None) as batch_op:
        batch_op.drop_column('legal_deadline_at')
        batch_op.drop_column('regime')
    with op.batch_alter_table('domains', schema=None) as batch_op:
        for name in ('take_it_down', 'dsa', 'designated'):
            batch_op.drop_column(name)
