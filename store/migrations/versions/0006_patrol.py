"""patrol: per-domain seeds, budgets and schedule; patrol runs; page validators

Revision ID: 0006
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0001'
branch_labels = None
depends_on = None

def _domain_columns():
    return [
        sa.Column('patrol_seeds', sa.JSON(), nullable=True),
        sa.Column('patrol_every_s', sa.Integer(), nullable=True),
        sa.Column('patrol_pages', sa.Integer(), nullable=True),
        sa.Column('patrol_bytes', sa.Integer(), nullable=True),
        sa.Column('patrol_pages_day', sa.Integer(), nullable=True),
        sa.Column('patrol_next', sa.String(length=200), nullable=True),
        sa.Column('patrol_gate', sa.String(length=200), nullable=True),
        sa.Column('patrol_cookie', sa.String(length=500), nullable=True),
        sa.Column('patrol_enabled', sa.Boolean(), nullable=True),
        sa.Column('next_patrol_at', sa.DateTime(), nullable=True),
        sa.Column('last_patrol_at', sa.DateTime(), nullable=True),
        sa.Column('patrol_lease_until', sa.DateTime(), nullable=True),
        sa.Column('patrol_robots', sa.JSON(), nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table('domains') as batch:
        for column in _domain_columns():
            batch.add_column(column)
        batch.create_index('ix_domains_next_patrol_at', ['next_patrol_at'], unique=False)
    op.create_table(
        'patrol_runs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('domain_id', sa.Integer(), nullable=False),
        sa.Column('job_id', sa.Integer(), nullable=True),
        sa.Column('started_at', sa.DateTime(), nullable=False),
        sa.Column('finished_at', sa.DateTime(), nullable=True),
        sa.Column('status', sa.String(length=10), nullable=False),
        sa.Column('pages', sa.Integer(), nullable=False),
        sa.Column('probes', sa.Integer(), nullable=False),
        sa.Column('unchanged', sa.Integer(), nullable=False),
        sa.Column('fetched', sa.Integer(), nullable=False),
        sa.Column('bytes', sa.Integer(), nullable=False),
        sa.Column('media', sa.Integer(), nullable=False),
        sa.Column('skipped_media', sa.Integer(), nullable=False),
        sa.Column('matches', sa.Integer(), nullable=False),
        sa.Column('errors', sa.Integer(), nullable=False),
        sa.Column('blocked', sa.Integer(), nullable=False),
        sa.Column('seconds', sa.Float(), nullable=False),
        sa.Column('detail', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['domain_id'], ['domains.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['job_id'], ['crawl_jobs.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_patrol_runs_domain_id', 'patrol_runs', ['domain_id'], unique=False)
    op.create_index('ix_patrol_runs_started_at', 'patrol_runs', ['started_at'], unique=False)
    op.create_table(
        'patrol_pages',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('domain_id', sa.Integer(), nullable=False),
        sa.Column('url_key', sa.String(length=64), nullable=False),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('etag', sa.String(length=300), nullable=True),
        sa.Column('last_modified', sa.String(length=100), nullable=True),
        sa.Column('content_hash', sa.String(length=64), nullable=True),
        sa.Column('status', sa.Integer(), nullable=True),
        sa.Column('fetched_at', sa.DateTime(), nullable=True),
        sa.Column('changed_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['domain_id'], ['domains.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('domain_id', 'url_key'),
    )
    op.create_index('ix_patrol_pages_domain_id', 'patrol_pages', ['domain_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_patrol_pages_domain_id', table_name='patrol_pages')
    op.drop_table('patrol_pages')
    op.drop_index('ix_patrol_runs_started_at', table_name='patrol_runs')
    op.drop_index('ix_patrol_runs_domain_id', table_name='patrol_runs')
    op.drop_table('patrol_runs')
    with op.batch_alter_table('domains') as batch:
        batch.drop_index('ix_domains_next_patrol_at')
        for column in reversed(_domain_columns()):
            batch.drop_column(column.name)
