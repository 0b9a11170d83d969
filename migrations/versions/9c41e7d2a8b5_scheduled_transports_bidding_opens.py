"""scheduled transports: bidding opens at a lead time before pickup; recurring series

Revision ID: 9c41e7d2a8b5
Revises: e1a7c3b9d052
Create Date: 2026-12-01 04:40:00.000000

Hospital silo: a request booked ahead keeps when its bidding opens (``bidding_opens_at``,
None for one that opened at posting) and when the timer announced the opening
(``opening_announced_at``), with a partial index of the openings still to announce.
Existing requests opened at posting: both stay empty.  Recurring series
(``transport_series``, their skipped and moved dates in ``transport_series_exceptions``);
a request that is a series' occurrence names it and its date, once per date (unique).
Return legs (``return_of_id``, one per outbound), will-call release and patient readiness
times (``will_call``, ``released_at``, ``released_by``, ``patient_ready_at``, ``not_ready_at``,
``not_ready_reason``).  The analytics timings index carries
``bidding_opens_at`` too (speeds count from the opening), so medians still read the index alone.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '9c41e7d2a8b5'
down_revision = 'e1a7c3b9d052'
branch_labels = None
depends_on = None

DUE = "opening_announced_at IS NULL AND bidding_opens_at IS NOT NULL"
TIMINGS = ['hospital_id', 'awarded_agency_id', 'level_of_care', 'urgency', 'first_bid_at', 'awarded_at',
           'at_pickup_at', 'awarded_eta_minutes']


def upgrade(engine_name):
    globals()["upgrade_%s" % engine_name]()


def downgrade(engine_name):
    globals()["downgrade_%s" % engine_name]()


def upgrade_():
    pass


def downgrade_():
    pass


def upgrade_hospital():
    op.create_table(
        'transport_series',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('public_id', sa.String(length=36), nullable=False),
        sa.Column('hospital_id', sa.Integer(), nullable=False),
        sa.Column('hospital_code', sa.String(length=12), nullable=False),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('frequency', sa.String(length=8), nullable=False),
        sa.Column('interval', sa.Integer(), nullable=False),
        sa.Column('weekdays', sa.String(length=20), nullable=False),
        sa.Column('pickup_time', sa.Time(), nullable=False),
        sa.Column('window_minutes', sa.Integer(), nullable=False),
        sa.Column('start_date', sa.Date(), nullable=False),
        sa.Column('until_date', sa.Date(), nullable=True),
        sa.Column('occurrence_count', sa.Integer(), nullable=True),
        sa.Column('fold', sa.Integer(), nullable=False),
        sa.Column('origin_facility_id', sa.Integer(), nullable=False),
        sa.Column('pickup_location', sa.String(length=120), nullable=False),
        sa.Column('destination_facility_id', sa.Integer(), nullable=True),
        sa.Column('destination_address', sa.String(length=240), nullable=False),
        sa.Column('level_of_care', sa.String(length=3), nullable=False),
        sa.Column('mobility', sa.String(length=24), nullable=False),
        sa.Column('urgency', sa.String(length=10), nullable=False),
        sa.Column('patient_ref', sa.String(length=16), nullable=False),
        sa.Column('age_group', sa.String(length=16), nullable=False),
        sa.Column('weight_kg', sa.Integer(), nullable=False),
        sa.Column('isolation', sa.String(length=12), nullable=False),
        sa.Column('oxygen_lpm', sa.Float(), nullable=False),
        sa.Column('cardiac_monitor', sa.Boolean(), nullable=False),
        sa.Column('iv_pump', sa.Boolean(), nullable=False),
        sa.Column('ventilator', sa.Boolean(), nullable=False),
        sa.Column('other_needs', sa.String(length=200), nullable=False),
        sa.Column('notes', sa.String(length=500), nullable=False),
        sa.Column('bid_deadline_minutes', sa.Integer(), nullable=False),
        sa.Column('invite_mode', sa.String(length=20), nullable=False),
        sa.Column('invite_all_after_minutes', sa.Integer(), nullable=True),
        sa.Column('standing_agency_id', sa.Integer(), nullable=True),
        sa.Column('standing_order_minutes', sa.Integer(), nullable=True),
        sa.Column('generated_through', sa.Date(), nullable=True),
        sa.Column('cancelled_at', sa.DateTime(), nullable=True),
        sa.Column('cancel_reason', sa.String(length=24), nullable=True),
        sa.Column('cancel_note', sa.String(length=300), nullable=True),
        sa.Column('continues_id', sa.Integer(), nullable=True),
        sa.Column('created_by_user_id', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.CheckConstraint("status IN ('active', 'cancelled')", name=op.f('ck_transport_series_series_status_known')),
        sa.CheckConstraint("frequency IN ('weekly', 'daily')", name=op.f('ck_transport_series_series_frequency_known')),
        sa.ForeignKeyConstraint(['continues_id'], ['transport_series.id'], name=op.f('fk_transport_series_continues_id_transport_series')),
        sa.ForeignKeyConstraint(['destination_facility_id'], ['hospital_facilities.id'], name=op.f('fk_transport_series_destination_facility_id_hospital_facilities')),
        sa.ForeignKeyConstraint(['origin_facility_id'], ['hospital_facilities.id'], name=op.f('fk_transport_series_origin_facility_id_hospital_facilities')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_transport_series')),
        sa.UniqueConstraint('public_id', name=op.f('uq_transport_series_public_id')),
    )
    op.create_index(op.f('ix_transport_series_hospital_id'), 'transport_series', ['hospital_id'], unique=False)
    op.create_index('ix_transport_series_status_generated', 'transport_series',
                    ['status', 'generated_through'], unique=False)
    op.create_table(
        'transport_series_exceptions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('series_id', sa.Integer(), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('moved_to', sa.DateTime(), nullable=True),
        sa.Column('moved_fold', sa.Integer(), nullable=False),
        sa.Column('note', sa.String(length=200), nullable=False),
        sa.Column('created_by_user_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('skip', 'move')", name=op.f('ck_transport_series_exceptions_series_exception_kind_known')),
        sa.ForeignKeyConstraint(['series_id'], ['transport_series.id'], name=op.f('fk_transport_series_exceptions_series_id_transport_series')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_transport_series_exceptions')),
        sa.UniqueConstraint('series_id', 'day', name='uq_series_exception_day'),
    )
    with op.batch_alter_table('transport_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bidding_opens_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('opening_announced_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('series_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('series_date', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('return_of_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('will_call', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('released_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('released_by', sa.String(length=160), nullable=True))
        batch_op.add_column(sa.Column('patient_ready_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('not_ready_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('not_ready_reason', sa.String(length=200), nullable=True))
        batch_op.create_foreign_key('fk_transport_requests_series_id_transport_series', 'transport_series',
                                    ['series_id'], ['id'])
        batch_op.create_foreign_key('fk_transport_requests_return_of_id_transport_requests',
                                    'transport_requests', ['return_of_id'], ['id'])
        batch_op.create_unique_constraint('uq_transport_requests_return_of_id', ['return_of_id'])
        batch_op.create_unique_constraint('uq_transport_requests_series_date', ['series_id', 'series_date'])
    op.create_index('ix_transport_requests_opening_due', 'transport_requests', ['bidding_opens_at'],
                    unique=False, postgresql_where=sa.text(DUE), sqlite_where=sa.text(DUE))
    op.create_index('ix_transport_requests_status_opens', 'transport_requests', ['status', 'bidding_opens_at'],
                    unique=False)
    op.drop_index('ix_transport_requests_created_timings', table_name='transport_requests',
                  postgresql_include=TIMINGS)
    op.create_index('ix_transport_requests_created_timings', 'transport_requests', ['created_at'],
                    unique=False, postgresql_include=TIMINGS + ['bidding_opens_at'])


def downgrade_hospital():
    op.drop_index('ix_transport_requests_status_opens', table_name='transport_requests')
    op.drop_index('ix_transport_requests_created_timings', table_name='transport_requests',
                  postgresql_include=TIMINGS + ['bidding_opens_at'])
    op.create_index('ix_transport_requests_created_timings', 'transport_requests', ['created_at'],
                    unique=False, postgresql_include=TIMINGS)
    op.drop_index('ix_transport_requests_opening_due', table_name='transport_requests',
                  postgresql_where=sa.text(DUE), sqlite_where=sa.text(DUE))
    with op.batch_alter_table('transport_requests', schema=None) as batch_op:
        batch_op.drop_constraint('uq_transport_requests_series_date', type_='unique')
        batch_op.drop_constraint('fk_transport_requests_series_id_transport_series', type_='foreignkey')
        batch_op.drop_constraint('uq_transport_requests_return_of_id', type_='unique')
        batch_op.drop_constraint('fk_transport_requests_return_of_id_transport_requests', type_='foreignkey')
        for column in ('not_ready_reason', 'not_ready_at', 'patient_ready_at', 'released_by', 'released_at',
                       'will_call', 'return_of_id'):
            batch_op.drop_column(column)
        batch_op.drop_column('series_date')
        batch_op.drop_column('series_id')
        batch_op.drop_column('opening_announced_at')
        batch_op.drop_column('bidding_opens_at')
    op.drop_table('transport_series_exceptions')
    op.drop_index('ix_transport_series_status_generated', table_name='transport_series')
    op.drop_index(op.f('ix_transport_series_hospital_id'), table_name='transport_series')
    op.drop_table('transport_series')


def upgrade_ems():
    pass


def downgrade_ems():
    pass
