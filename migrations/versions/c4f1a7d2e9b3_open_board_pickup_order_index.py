"""open boards: requests by status and pickup window start

Revision ID: c4f1a7d2e9b3
Revises: c4a8e2f61b37
Create Date: 2026-12-01 05:00:00.000000

Hospital silo: the boards sort open requests by pickup time a page at a time
(``ORDER BY window_start LIMIT 50``); this index lets the database read that page in
order instead of sorting every open request.  Deadline and posting-time orders already
have theirs (``status, bid_deadline`` and ``status, created_at``).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c4f1a7d2e9b3'
down_revision = 'c4a8e2f61b37'
branch_labels = None
depends_on = None


def upgrade(engine_name):
    globals()["upgrade_%s" % engine_name]()


def downgrade(engine_name):
    globals()["downgrade_%s" % engine_name]()


def upgrade_():
    pass


def downgrade_():
    pass


def upgrade_hospital():
    with op.batch_alter_table('transport_requests', schema=None) as batch_op:
        batch_op.create_index('ix_transport_requests_status_window', ['status', 'window_start'], unique=False)


def downgrade_hospital():
    with op.batch_alter_table('transport_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_transport_requests_status_window')


def upgrade_ems():
    pass


def downgrade_ems():
    pass
