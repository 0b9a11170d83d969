"""a need above the level of care may be overridden with a reason

Revision ID: c4a8e2f61b37
Revises: 7b3e5c1a9d42
Create Date: 2026-12-01 04:50:00.000000

Hospital silo: a request keeps the nurse's reason for sending it at a level of care below one
of its needs (``services/care_rules.py``) and the needs that covers.  EMS silo: a unit's route
keeps a copy of both with the other facts a crew needs of the trip.  Existing requests have no
override (the columns are empty).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c4a8e2f61b37'
down_revision = '7b3e5c1a9d42'
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
        batch_op.add_column(sa.Column('care_override_reason', sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column('care_override_needs', sa.String(length=120), nullable=True))


def downgrade_hospital():
    with op.batch_alter_table('transport_requests', schema=None) as batch_op:
        batch_op.drop_column('care_override_needs')
        batch_op.drop_column('care_override_reason')


def upgrade_ems():
    with op.batch_alter_table('ems_routes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('care_override_reason', sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column('care_override_needs', sa.String(length=120), nullable=True))


def downgrade_ems():
    with op.batch_alter_table('ems_routes', schema=None) as batch_op:
        batch_op.drop_column('care_override_needs')
        batch_op.drop_column('care_override_reason')
