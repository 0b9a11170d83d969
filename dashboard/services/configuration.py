"""System configuration: typed values with defaults and validation, stored in the center silo."""
import sqlalchemy as sa

from ..events.outbox import emit
from ..extensions import db
from ..models.base import utcnow
from ..models.center import SystemConfiguration
from . import audit, center_reads
from .refusals import Refused

AUTO_AWARD_POLICIES = {
    "off": "Off",
    "preferred_best_eta": "Best ETA from a preferred agency, after the deadline",
    "first_qualifying": "First qualifying bid",
}

#: key -> (default, kind, minimum, maximum, label)
SETTINGS = {
    "bid_deadline_default_minutes": (30, int, 5, 24 * 60, "Default bidding deadline (minutes after posting)"),
    "risk_no_bids_minutes": (10, int, 1, 240, "At risk: open with no bids after (minutes)"),
    "risk_pickup_window_minutes": (15, int, 1, 240, "At risk: pickup window closes within (minutes)"),
    "auto_award_policy": ("off", str, None, None, "Auto-award policy"),
    "board_recent_hours": (24, int, 1, 168, "Board: show closed requests of the last (hours)"),
    "booking_horizon_days": (90, int, 1, 366, "Book ahead: latest pickup (days from now)"),
    "bidding_lead_hours_bls": (48, int, 1, 14 * 24, "Bidding opens before pickup, BLS (hours)"),
    "bidding_lead_hours_als": (48, int, 1, 14 * 24, "Bidding opens before pickup, ALS (hours)"),
    "bidding_lead_hours_cct": (72, int, 1, 14 * 24, "Bidding opens before pickup, CCT (hours)"),
    "series_generate_days": (14, int, 1, 60, "Recurring series: create occurrences this far ahead (days)"),
    "alert_closing_minutes": (10, int, 1, 240,
                              "Alert the hospital when bidding closes within (minutes) with no bid"),
    "escalation_ladder": ("admin@10", str, None, None, "Escalation ladder"),
}

#: The lead-time setting of each level of care (``services.scheduling``).
LEAD_SETTINGS = {"BLS": "bidding_lead_hours_bls", "ALS": "bidding_lead_hours_als",
                 "CCT": "bidding_lead_hours_cct"}

#: How the configuration page groups the settings (a setting not listed shows under "Other").
GROUPS = (
    ("Bidding", ("bid_deadline_default_minutes", "auto_award_policy")),
    ("Escalation to the transport center", ("risk_no_bids_minutes", "risk_pickup_window_minutes",
                                            "board_recent_hours")),
    ("Scheduled transports", ("booking_horizon_days", "bidding_lead_hours_bls", "bidding_lead_hours_als",
                              "bidding_lead_hours_cct", "series_generate_days")),
    ("Alerts", ("alert_closing_minutes", "escalation_ladder")),
)


def grouped():
    """``[(group title, [key])]`` covering every setting once."""
    listed = {key for _title, keys in GROUPS for key in keys}
    other = [key for key in SETTINGS if key not in listed]
    return [(title, [k for k in keys if k in SETTINGS]) for title, keys in GROUPS] + (
        [("Other", other)] if other else [])


def defaults():
    return {key: spec[0] for key, spec in SETTINGS.items()}


def get_all():
    """Every setting, stored value over default."""
    values = defaults()
    values.update(_stored())
    return values


def _stored():
    """``{key: value}`` of the stored settings; while the center is unreachable, the values
    read last (or none: the defaults apply)."""
    table = SystemConfiguration.__table__

    def query(conn):
        rows = conn.execute(sa.select(table.c.key, table.c.value)).all()
        return {key: value for key, value in rows if key in SETTINGS}

    return center_reads.read("configuration", query, dict)


def get(key):
    if key not in SETTINGS:
        raise KeyError(key)
    return _stored().get(key, SETTINGS[key][0])


def validate(key, raw):
    """Return (value, None) or (None, message)."""
    if key not in SETTINGS:
        return None, "Unknown setting."
    default, kind, low, high, label = SETTINGS[key]
    if key == "auto_award_policy":
        if raw not in AUTO_AWARD_POLICIES:
            return None, "Choose one of the listed policies."
        return raw, None
    if key == "escalation_ladder":
        try:
            steps = parse_ladder(raw)
        except ValueError as problem:
            return None, str(problem)
        return format_ladder(steps), None
    try:
        value = kind(str(raw).strip())
    except (TypeError, ValueError):
        return None, "Enter a whole number."
    if value < low or value > high:
        return None, f"Enter a value from {low} to {high}."
    return value, None


def set_value(key, value, user_id):
    """Store a validated value; return the previous value (the caller audits and commits)."""
    row = db.session.scalar(sa.select(SystemConfiguration).where(SystemConfiguration.key == key))
    before = SETTINGS[key][0] if row is None else row.value
    if row is None:
        row = SystemConfiguration(key=key)
        db.session.add(row)
    row.value = value
    row.updated_at = utcnow()
    row.updated_by_user_id = user_id
    return before


def save(raw_values, actor):
    """Validate every submitted value; store, audit and announce those that changed.

    ``raw_values`` maps setting keys to what the form sent; ``actor`` has
    ``user_id``, ``email`` and ``ip``.  Returns ``(changed, errors)``: on any
    error nothing is stored and ``changed`` is empty; otherwise ``changed`` maps
    each changed key to ``(before, after)``, with one audit entry per value and
    one ``config.changed`` event.  The caller commits.
    """
    values, errors = {}, {}
    for key in SETTINGS:
        value, problem = validate(key, raw_values.get(key))
        if problem:
            errors[key] = problem
        else:
            values[key] = value
    if errors:
        return {}, errors
    current = get_all()
    changed = {}
    for key, value in values.items():
        if current[key] == value:
            continue
        before = set_value(key, value, actor.user_id)
        changed[key] = (before, value)
        audit.record("config.changed", user_id=actor.user_id, user_email=actor.email, ip=actor.ip,
                     entity_type="config", entity_id=key, before={key: before}, after={key: value},
                     detail=SETTINGS[key][4])
    if changed:
        emit("center", "config.changed", "config", "system",
             {"changed": {key: [before, after] for key, (before, after) in changed.items()}}, actor=actor)
    return changed, {}


class ConfigurationRefused(Refused):
    """Settings that do not validate (400); ``errors`` maps each setting key at fault to its
    message (:func:`problems` gives the same mapping)."""

    status = 400

    def __init__(self, errors):
        super().__init__("Check the highlighted fields; nothing was saved.", 400)
        self.errors = errors


def problems(raw_values):
    """``{key: message}`` of the submitted values that do not validate (empty when all do)."""
    return {key: problem for key in SETTINGS if (problem := validate(key, raw_values.get(key))[1])}


def apply(raw_values, actor):
    """:func:`save`, refusing instead of returning errors: returns ``changed`` (see :func:`save`).

    Raises :class:`ConfigurationRefused` (400) when any value does not validate; nothing is
    stored then.  The caller commits."""
    changed, errors = save(raw_values, actor)
    if errors:
        raise ConfigurationRefused(errors)
    return changed


#: Who a step of the escalation ladder alerts.
LADDER_ROLES = ("coordinator", "admin")
LADDER_MAX_STEPS = 6


def parse_ladder(text):
    """The escalation ladder's steps after the center's first alert, from ``"admin@10,
    admin@30"``: ``[(role, minutes)]``, each step alerting ``role`` (coordinator or admin) when
    the request is still not acknowledged ``minutes`` after it first alerted the center.  Minutes
    rise strictly, from 1 to 1440; at most six steps; empty text, no steps.  Raises ValueError
    with a message for the form."""
    steps = []
    for part in [p.strip() for p in str(text or "").split(",") if p.strip()]:
        role, at, minutes = part.partition("@")
        role = role.strip().lower()
        if not at or role not in LADDER_ROLES or not minutes.strip().isdigit():
            raise ValueError("Write each step as role@minutes (role coordinator or admin), "
                             "separated by commas, e.g. admin@10, admin@30.")
        value = int(minutes.strip())
        if not 1 <= value <= 1440:
            raise ValueError("Minutes go from 1 to 1440.")
        if steps and value <= steps[-1][1]:
            raise ValueError("Each step comes later than the one before it.")
        steps.append((role, value))
    if len(steps) > LADDER_MAX_STEPS:
        raise ValueError(f"At most {LADDER_MAX_STEPS} steps.")
    return steps


def format_ladder(steps):
    return ", ".join(f"{role}@{minutes}" for role, minutes in steps)
