"""takedown: domain contacts and prediction, takedown follow-up, notice state, takedown events

Revision ID: 0004
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('domains') as batch:
        batch.add_column(sa.Column('contacts', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('prediction', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('updated_at', sa.DateTime(), nullable=True))
    with op.batch_alter_table('takedowns') as batch:
        batch.add_column(sa.Column('media', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('requested_at', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('deadline_at', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('resolved_at', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('checked_at', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('proposal', sa.String(length=20), nullable=True))
    with op.batch_alter_table('notices') as batch:
        batch.add_column(sa.Column('state', sa.String(length=10), nullable=False, server_default='ready'))
        batch.add_column(sa.Column('channel', sa.String(length=10), nullable=False, server_default='email'))
        batch.add_column(sa.Column('created_at', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('error', sa.Text(), nullable=True))
    op.create_table(
        'takedown_events',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('takedown_id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('actor', sa.String(length=100), nullable=False),
        sa.Column('detail', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['takedown_id'], ['takedowns.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_takedown_events_takedown_id', 'takedown_events', ['takedown_id'])
    op.create_table(
        'takedown_tallies',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('year', sa.Integer(), nullable=False),
        sa.Column('category', sa.String(length=20), nullable=False),
        sa.Column('domain', sa.String(length=253), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('count', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_takedown_tallies_year', 'takedown_tallies', ['year'])


def downgrade() -> None:
    op.drop_index('ix_takedown_tallies_year', table_name='takedown_tallies')
    op.drop_table('takedown_tallies')
    op.drop_index('ix_takedown_events_takedown_id', table_name='takedown_events')
    op.drop_table('takedown_events')
    with op.batch_alter_table('notices') as batch:
        for name in ('error', 'created_at', 'channel', 'state'):
            batch.drop_column(name)
    with op.batch_alter_table('takedowns') as batch:
        for name in ('proposal', 'checked_at', 'resolved_at', 'deadline_at', 'requested_at', 'media'):
            batch.drop_column(name)
    with op.batch_alter_table('domains') as batch:
        for name in ('updated_at', 'prediction', 'contacts'):
            batch.drop_column(name)
