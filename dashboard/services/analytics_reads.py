"""Reads of the analytics blueprint that are not figures: the registry lists its filters offer.

The figures themselves come from :mod:`dashboard.services.analytics`.
"""
import sqlalchemy as sa

from ..extensions import db
from ..models.center import Agency, Hospital


def _registry(model):
    """``[(public_id, name, registry id)]`` of ``model``, by name."""
    return [tuple(row) for row in db.session.execute(
        sa.select(model.public_id, model.name, model.id).order_by(model.name))]


def hospitals():
    """Every hospital of the center registry as ``[(public_id, name, registry id)]``, by name."""
    return _registry(Hospital)


def agencies():
    """Every agency of the center registry as ``[(public_id, name, registry id)]``, by name."""
    return _registry(Agency)
