"""analytics by hospital and by agency over time

The analytics of one hospital or one agency read the requests of the days computed live
(today, and days with a request still running) by ``hospital_id`` or ``awarded_agency_id``
and ``created_at``.  SQLite, without statistics, went through
``ix_transport_requests_hospital_status_created`` (hospital_id only) or
``ix_transport_requests_agency_status`` and read all the hospital's or agency's requests of
every year: with 200,000 trips of history 77 statements of the three analytics pages grew
from about 0.03 ms to 3-6 ms each; with these indexes 62 of them no longer grow.

Revision ID: b8e4f1c3d925
Revises: a5d2c8e71f40
Create Date: 2026-12-02 12:00:00.000000

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = 'b8e4f1c3d925'
down_revision = 'a5d2c8e71f40'
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
        batch_op.create_index('ix_transport_requests_hospital_created', ['hospital_id', 'created_at'], unique=False)
        batch_op.create_index('ix_transport_requests_agency_created', ['awarded_agency_id', 'created_at'],
                              unique=False)


def downgrade_hospital():
    with op.batch_alter_table('transport_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_transport_requests_agency_created')
        batch_op.drop_index('ix_transport_requests_hospital_created')


def upgrade_ems():
    pass


def downgrade_ems():
    pass
