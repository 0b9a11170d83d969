"""organisation administrators: a hospital or EMS user who runs their organisation's settings

Revision ID: e1a7c3b9d052
Revises: b6ad4eaa87b8
Create Date: 2026-12-01 06:00:00.000000

Center silo: ``users.org_admin`` (false for everyone at first).  A hospital or EMS user so marked
sets their organisation's alert defaults and webhooks; an agency's also runs its crew accounts.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e1a7c3b9d052'
down_revision = 'b6ad4eaa87b8'
branch_labels = None
depends_on = None


def upgrade(engine_name):
    globals()["upgrade_%s" % engine_name]()


def downgrade(engine_name):
    globals()["downgrade_%s" % engine_name]()


def upgrade_():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('org_admin', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade_():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('org_admin')


def upgrade_hospital():
    pass


def downgrade_hospital():
    pass


def upgrade_ems():
    pass


def downgrade_ems():
    pass
