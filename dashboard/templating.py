"""Template filters and globals: local times, labels, the navigation of each role."""
from flask import current_app
from flask_login import current_user

from .localtime import to_local
from .models import base as vocab
from .models import ems as ems_vocab
from .models import hospital as hospital_vocab
from .models.base import utcnow
from .services import degraded


def format_time(value, fmt="%a %d %b %H:%M"):
    local = to_local(value)
    return local.strftime(fmt) if local else "—"


def format_age(value, now=None):
    """How long ago, as dispatchers say it: 4 min, 2 h 05, 3 d."""
    if value is None:
        return "—"
    seconds = int(((now or utcnow()) - value).total_seconds())
    if seconds < 0:
        return "in " + format_duration(-seconds)
    return format_duration(seconds)


def format_duration(seconds):
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d}"
    return f"{hours // 24} d"


NAVIGATION = {
    "hospital": [
        ("hospital.dashboard", "Requests"),
        ("hospital.new_request", "New request"),
        ("hospital.preferences", "Preferred agencies"),
        ("analytics.hospital_view", "Analytics"),
    ],
    "ems": [
        ("ems.board", "Open requests"),
        ("ems.my_trips", "My trips"),
        ("ems.units", "Units"),
        ("ems.history", "Bid history"),
        ("analytics.ems_view", "Analytics"),
    ],
    "coordinator": [
        ("center.board", "Regional board"),
        ("center.units", "Units"),
        ("analytics.center_view", "Analytics"),
        ("center.audit", "Audit log"),
        ("center.health", "Silo health"),
    ],
    "admin": [
        ("center.board", "Regional board"),
        ("center.units", "Units"),
        ("center.registry", "Registry"),
        ("center.users", "Users"),
        ("center.config", "Configuration"),
        ("analytics.center_view", "Analytics"),
        ("center.audit", "Audit log"),
        ("center.health", "Silo health"),
    ],
}


def navigation():
    """The navigation entries of the signed-in user's role whose endpoints exist."""
    if not current_user.is_authenticated:
        return []
    endpoints = current_app.view_functions
    return [(ep, label) for ep, label in NAVIGATION.get(current_user.role, []) if ep in endpoints]


def _live_since():
    """The last signal id when a live page is rendered (its stream replays from there)."""
    from .events.hub import hub

    try:
        return hub.latest_id()
    except Exception:  # the center (where signals are kept) is unreachable: no replay point
        from .extensions import db

        db.session.rollback()
        return None


def register(app):
    app.jinja_env.filters["localtime"] = format_time
    app.jinja_env.filters["age"] = format_age
    app.jinja_env.globals.update(
        navigation=navigation,
        live_since=_live_since,
        unavailable_silos=degraded.unavailable,
        SILO_BANNERS=degraded.BANNERS,
        LEVEL_LABELS=vocab.LEVEL_LABELS,
        MOBILITIES=vocab.MOBILITIES,
        URGENCIES=vocab.URGENCIES,
        ROLES=vocab.ROLES,
        UNIT_STATUSES=ems_vocab.UNIT_STATUSES,
        CANCEL_REASONS=hospital_vocab.CANCEL_REASONS,
        AGE_GROUPS=hospital_vocab.AGE_GROUPS,
        ISOLATIONS=hospital_vocab.ISOLATIONS,
        INVITE_MODES=hospital_vocab.INVITE_MODES,
        dispatch_state=vocab.trip_dispatch_state,
        DISPATCH_STATES=vocab.DISPATCH_STATES,
        STATUS_LABELS={
            "open": "Open",
            "awarded": "Awarded",
            "en_route": "En route",
            "at_pickup": "At pickup",
            "transporting": "Transporting",
            "completed": "Completed",
            "cancelled": "Cancelled",
        },
    )

    @app.context_processor
    def _now():
        return {"now_utc": utcnow()}
