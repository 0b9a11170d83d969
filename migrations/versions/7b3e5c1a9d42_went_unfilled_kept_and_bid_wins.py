"""went unfilled is kept; an agency's wins are awards of its bids

Revision ID: 7b3e5c1a9d42
Revises: d90f26459318
Create Date: 2026-12-01 02:10:00.000000

Hospital silo: a request whose ``unfilled_at`` an award, an extension or a re-opening
cleared gets it back from its own history (its first ``unfilled`` entry).  Center silo:
analytics cells gain ``bid_awards`` (awards of a bid; a center assignment without a bid
is not an agency's win), and the stored cells are dropped, so each closed day is computed
again from the kept history: the relay's timer stores the last days, a page that meets an
older day stores it, and ``flask medport rollup --days N`` backfills at once.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '7b3e5c1a9d42'
down_revision = 'd90f26459318'
branch_labels = None
depends_on = None


def upgrade(engine_name):
    globals()["upgrade_%s" % engine_name]()


def downgrade(engine_name):
    globals()["downgrade_%s" % engine_name]()


STORED_ANALYTICS = ('analytics_unit_cells', 'analytics_bid_cells', 'analytics_cells', 'analytics_days')


def upgrade_():
    for table in STORED_ANALYTICS:
        op.execute(sa.text(f'DELETE FROM {table}'))
    with op.batch_alter_table('analytics_cells', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bid_awards', sa.Integer(), nullable=False, server_default='0'))


def downgrade_():
    for table in STORED_ANALYTICS:
        op.execute(sa.text(f'DELETE FROM {table}'))
    with op.batch_alter_table('analytics_cells', schema=None) as batch_op:
        batch_op.drop_column('bid_awards')


def upgrade_hospital():
    op.execute(sa.text(
        "UPDATE transport_requests SET unfilled_at = ("
        " SELECT MIN(e.at) FROM transport_request_events e"
        " WHERE e.trip_id = transport_requests.id AND e.action = 'unfilled')"
        " WHERE unfilled_at IS NULL AND EXISTS ("
        " SELECT 1 FROM transport_request_events e"
        " WHERE e.trip_id = transport_requests.id AND e.action = 'unfilled')"))


def downgrade_hospital():
    pass  # the restored history is true under the earlier code as well


def upgrade_ems():
    pass


def downgrade_ems():
    pass
