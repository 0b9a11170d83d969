"""bids by agency and status

An agency's live bids (the EMS board marks the requests it has bid on) were found through
``ix_transport_bids_agency_created`` on SQLite, every bid the agency ever placed read to keep
the live ones: about 400 ms with 200,000 trips of history.  PostgreSQL uses the partial unique
index of live bids; SQLite cannot, the status being a bound parameter.

Revision ID: a5d2c8e71f40
Revises: 9c41e7d2a8b5
Create Date: 2026-12-02 11:45:00.000000

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = 'a5d2c8e71f40'
down_revision = '9c41e7d2a8b5'
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
    pass


def downgrade_hospital():
    pass


def upgrade_ems():
    with op.batch_alter_table('transport_bids', schema=None) as batch_op:
        batch_op.create_index('ix_transport_bids_agency_status', ['agency_id', 'status'], unique=False)


def downgrade_ems():
    with op.batch_alter_table('transport_bids', schema=None) as batch_op:
        batch_op.drop_index('ix_transport_bids_agency_status')
