"""job runs: every unit of queued work is a row first (lease, attempts, real error)

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'job_runs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=30), nullable=False),
        sa.Column('ref', sa.String(length=100), nullable=False),
        sa.Column('state', sa.String(length=10), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('due_at', sa.DateTime(), nullable=False),
        sa.Column('lease_until', sa.DateTime(), nullable=True),
        sa.Column('wake_id', sa.String(length=100), nullable=True),
        sa.Column('options', sa.JSON(), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name', 'ref'),
    )
    op.create_index('ix_job_runs_state', 'job_runs', ['state'])
    op.create_index('ix_job_runs_due_at', 'job_runs', ['due_at'])


def downgrade() -> None:
    op.drop_index('ix_job_runs_due_at', table_name='job_runs')
    op.drop_index('ix_job_runs_state', table_name='job_runs')
    op.drop_table('job_runs')
