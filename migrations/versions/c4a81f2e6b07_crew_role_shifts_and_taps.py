"""the crew on a phone: the crew role, shifts, taps and unit-scoped signals

Revision ID: c4a81f2e6b07
Revises: c4f1a7d2e9b3
Create Date: 2026-12-01 05:00:00.000000

Center silo: ``users.role`` may be ``crew`` (bound to an agency like ``ems``); live signals
name the units they concern (``unit_ids``), so a crew's stream passes on only its unit's.
EMS silo: ``crew_shifts`` (who staffs which unit, from when, until when) and ``crew_taps``
(each tap of a crew's phone by its idempotency key, with its time and the answer given).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c4a81f2e6b07'
down_revision = 'c4f1a7d2e9b3'
branch_labels = None
depends_on = None

ROLE_KNOWN_OLD = "role IN ('hospital', 'ems', 'coordinator', 'admin')"
ROLE_KNOWN_NEW = "role IN ('hospital', 'ems', 'crew', 'coordinator', 'admin')"
ROLE_BOUND_OLD = "(role <> 'hospital' OR hospital_id IS NOT NULL) AND (role <> 'ems' OR agency_id IS NOT NULL)"
ROLE_BOUND_NEW = ("(role <> 'hospital' OR hospital_id IS NOT NULL) AND (role <> 'ems' OR agency_id IS NOT NULL) "
                  "AND (role <> 'crew' OR agency_id IS NOT NULL)")
OPEN_SHIFT = "ended_at IS NULL"


def upgrade(engine_name):
    globals()["upgrade_%s" % engine_name]()


def downgrade(engine_name):
    globals()["downgrade_%s" % engine_name]()


def _role_checks(known, bound):
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_users_role_known'), type_='check')
        batch_op.drop_constraint(op.f('ck_users_role_bound'), type_='check')
        batch_op.create_check_constraint('role_known', known)
        batch_op.create_check_constraint('role_bound', bound)


def upgrade_():
    _role_checks(ROLE_KNOWN_NEW, ROLE_BOUND_NEW)
    with op.batch_alter_table('live_signals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unit_ids', sa.String(length=200), nullable=False, server_default=''))


def downgrade_():
    op.execute(sa.text("DELETE FROM user_sessions WHERE user_id IN (SELECT id FROM users WHERE role = 'crew')"))
    op.execute(sa.text("DELETE FROM users WHERE role = 'crew'"))
    with op.batch_alter_table('live_signals', schema=None) as batch_op:
        batch_op.drop_column('unit_ids')
    _role_checks(ROLE_KNOWN_OLD, ROLE_BOUND_OLD)


def upgrade_hospital():
    pass


def downgrade_hospital():
    pass


def upgrade_ems():
    op.create_table('crew_shifts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('agency_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('crew_name', sa.String(length=120), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('ends_at', sa.DateTime(), nullable=False),
    sa.Column('ended_at', sa.DateTime(), nullable=True),
    sa.CheckConstraint('ends_at > started_at', name=op.f('ck_crew_shifts_shift_ordered')),
    sa.ForeignKeyConstraint(['unit_id'], ['units.id'], name=op.f('fk_crew_shifts_unit_id_units')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_crew_shifts'))
    )
    with op.batch_alter_table('crew_shifts', schema=None) as batch_op:
        batch_op.create_index('ix_crew_shifts_unit_ended', ['unit_id', 'ended_at'], unique=False)
        batch_op.create_index('uq_crew_shifts_one_open_per_user', ['user_id'], unique=True,
                              sqlite_where=sa.text(OPEN_SHIFT), postgresql_where=sa.text(OPEN_SHIFT))
    op.create_table('crew_taps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('trip_public_id', sa.String(length=36), nullable=False),
    sa.Column('action', sa.String(length=8), nullable=False),
    sa.Column('step', sa.String(length=20), nullable=False),
    sa.Column('tapped_at', sa.DateTime(), nullable=False),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('message', sa.String(length=400), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_crew_taps')),
    sa.UniqueConstraint('key', name=op.f('uq_crew_taps_key'))
    )
    with op.batch_alter_table('crew_taps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_crew_taps_received_at'), ['received_at'], unique=False)


def downgrade_ems():
    with op.batch_alter_table('crew_taps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_crew_taps_received_at'))
    op.drop_table('crew_taps')
    with op.batch_alter_table('crew_shifts', schema=None) as batch_op:
        batch_op.drop_index('uq_crew_shifts_one_open_per_user', sqlite_where=sa.text(OPEN_SHIFT),
                            postgresql_where=sa.text(OPEN_SHIFT))
        batch_op.drop_index('ix_crew_shifts_unit_ended')
    op.drop_table('crew_shifts')
