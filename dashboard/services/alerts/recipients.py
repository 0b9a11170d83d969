"""Alert recipients: the active users of a hospital, of agencies or of the center, and the
agencies that may take a request of a level of care."""
import sqlalchemy as sa

from ...extensions import db
from ...models.center import Agency, Hospital, User
from ...models.vocabulary import CENTER_ROLES, LEVEL_RANK


def _users(condition):
    return list(db.session.scalars(sa.select(User).where(User.active.is_(True), condition)
                                   .order_by(User.id)))


def hospital_users(hospital_id):
    if hospital_id is None:
        return []
    active = sa.select(Hospital.id).where(Hospital.id == hospital_id, Hospital.active.is_(True))
    return _users(sa.and_(User.role == "hospital", User.hospital_id.in_(active)))


def agency_users(agency_ids):
    ids = sorted({i for i in agency_ids if i})
    if not ids:
        return []
    active = sa.select(Agency.id).where(Agency.id.in_(ids), Agency.active.is_(True))
    return _users(sa.and_(User.role == "ems", User.agency_id.in_(active)))


def center_users(roles=CENTER_ROLES):
    return _users(User.role.in_(roles))


def eligible_agencies(level, only=None, excluding=()):
    """Active agencies with ``level`` of care or higher (among ``only`` when given), less ``excluding``."""
    ids = set()
    for agency in db.session.scalars(sa.select(Agency).where(Agency.active.is_(True))):
        if only is not None and agency.id not in only:
            continue
        if agency.id in excluding:
            continue
        if any(LEVEL_RANK[lv] >= LEVEL_RANK[level] for lv in agency.level_list if lv in LEVEL_RANK):
            ids.add(agency.id)
    return ids
