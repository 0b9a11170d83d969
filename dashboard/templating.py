"""Template filters and globals: local times, labels, the navigation of each role."""
from datetime import UTC, timedelta

from flask import current_app, has_request_context, request
from flask_login import current_user
from jinja2 import pass_environment
from markupsafe import Markup, escape

from .events.hub import hub
from .extensions import db
from .localtime import local_zone, zone_named
from .models import hospital as hospital_vocab
from .models import vocabulary as vocab
from .models.base import utcnow
from .services import audit_trail, bidding, care_rules, degraded, lateness, returns, scheduling

#: The most formatted times :func:`format_time` keeps (then it starts again from none).
TIME_CACHE_LIMIT = 8192
_formatted = {}


def format_time(value, fmt="%a %d %b %H:%M"):
    """``value`` (naive UTC) in the region's zone as ``fmt`` (``strftime``), "—" for None."""
    if value is None:
        return "—"
    return _formatted_in(value, fmt, local_zone())


@pass_environment
def _localtime_filter(environment, value, fmt="%a %d %b %H:%M"):
    """The ``localtime`` filter: :func:`format_time`, the zone read from the template's app
    (not through ``current_app``: a board formats a few times per row)."""
    if value is None:
        return "—"
    return _formatted_in(value, fmt, zone_named(environment.app.config["MEDPORT_TIMEZONE"]))


def _formatted_in(value, fmt, zone):
    """A board shows the same times on every refresh, so each (time, format, zone) is
    formatted once and kept, at most :data:`TIME_CACHE_LIMIT` of them."""
    key = (value, fmt, zone)
    text = _formatted.get(key)
    if text is None:
        text = value.replace(tzinfo=UTC).astimezone(zone).strftime(fmt)
        if len(_formatted) >= TIME_CACHE_LIMIT:
            _formatted.clear()
        _formatted[key] = text
    return text


def format_age(value, now=None):
    """How long ago, as dispatchers say it: 4 min, 2 h 05 min, 3 d."""
    if value is None:
        return "—"
    seconds = int(((now or utcnow()) - value).total_seconds())
    if seconds < 0:
        return "in " + format_duration(-seconds)
    return format_duration(seconds)


def format_duration(seconds):
    """``seconds`` (a whole number, not negative) as "4 min", "2 h 05 min" (under 48 hours,
    each part with its unit) or "3 d".  ``static/medport.js`` words it the same way."""
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} d"


def _instant(value):
    """A naive-UTC datetime as the ISO 8601 instant a ``<time datetime>`` holds (``...Z``)."""
    return value.replace(microsecond=0).isoformat() + "Z"


def relative_time(value, now=None, ago=True):
    """How far ``value`` (naive UTC) is from now, as markup the page's script keeps current:
    ``<time datetime="2026-12-01T14:32:00Z" data-relative="ago">in 6 min</time>``.

    With ``ago`` the text reads "in 6 min" (future) or "6 min ago" (past); without it, the
    bare duration ("6 min", for an age column).  ``static/medport.js`` rewrites the text every
    15 s and after each live refresh with the same wording (:func:`format_duration`), so it
    moves without a reload.  ``None`` is "—".
    """
    if value is None:
        return "—"
    text = format_age(value, now)
    if ago and not text.startswith("in "):
        text += " ago"
    # Every part is made here of digits and fixed words (the instant, the duration): nothing to
    # escape, so the markup is one f-string (a board shows one per row; Markup.format or a join
    # escaping each part is several times slower).
    html = f'<time datetime="{_instant(value)}" data-relative="{"ago" if ago else "bare"}">{text}</time>'
    return Markup(html)  # nosec B704 - digits and fixed words only, made above


def eta_clock(given_at, minutes, now=None, lead="ETA "):
    """An ETA as a clock time with its age: "ETA 14:32, given 18 min ago" as markup (``lead``
    is the words before the clock time, e.g. "arriving ").

    ``given_at`` (naive UTC) is when the ETA was given (a bid placed or changed, an
    assignment); ``minutes`` the ETA then, from that moment.  The clock time is in the region's
    zone; the age moves with :func:`relative_time`.  Without ``given_at`` it is "ETA N min".
    """
    if minutes is None:
        return "—"
    if given_at is None:
        return f"ETA {minutes} min"
    arrival = given_at + timedelta(minutes=minutes)
    html = (f'{escape(lead)}<time datetime="{_instant(arrival)}">{escape(format_time(arrival, "%H:%M"))}'
            f'</time>, given {relative_time(given_at, now)}')
    return Markup(html)  # nosec B704 - the words escaped, the instant digits, relative_time markup


def late_of(thing, now=None):
    """The :class:`~dashboard.services.lateness.Late` of a hospital trip or a crew's stop (an
    object with ``trip_reference`` is a stop), or None."""
    if thing is None:
        return None
    now = now or utcnow()
    if hasattr(thing, "trip_reference"):
        return lateness.of_route(thing, now)
    if getattr(thing, "will_call_waiting", False):
        return None  # its window is not set until the patient is ready
    return lateness.of_trip(thing, now)


def late_badge(thing, now=None):
    """The late badge of a hospital trip or a crew's stop, as markup: shown when it is late now
    (:func:`late_of`); when it will be late at its next window boundary, the badge is rendered
    hidden with ``data-late-from`` (that instant) and ``static/medport.js`` shows it then, with
    no event needed.  Empty when neither."""
    if thing is None or getattr(thing, "will_call_waiting", False):
        return ""
    now = now or utcnow()
    found = late_of(thing, now)
    if found is not None:
        html = f'<span class="badge risk late late-{escape(found.code)}">{escape(found.label)}</span>'
        return Markup(html)  # nosec B704 - code and label escaped
    if hasattr(thing, "trip_reference"):
        status = lateness.ROUTE_TO_TRIP_STATUS.get(thing.status)
    else:
        status = thing.status
    coming = lateness.upcoming(status, thing.window_start, thing.window_end, now, **lateness.bounds_of(thing))
    if coming is None:
        return ""
    html = (f'<span class="badge risk late late-{escape(coming.code)}" data-late-from="'
            f'{_instant(coming.since)}" hidden>{escape(coming.label)}</span>')
    return Markup(html)  # nosec B704 - code and label escaped, the instant digits


NAVIGATION = {
    "hospital": [
        ("hospital.dashboard", "Requests"),
        ("hospital.new_request", "New request"),
        ("series.index", "Series"),
        ("hospital.will_call", "Will-call"),
        ("hospital.preferences", "Preferred agencies"),
        ("analytics.hospital_view", "Analytics"),
        ("alerts.index", "Alerts"),
    ],
    "ems": [
        ("ems.board", "Open requests"),
        ("ems.my_trips", "My trips"),
        ("ems.units", "Units"),
        ("ems.history", "Bid history"),
        ("analytics.ems_view", "Analytics"),
        ("alerts.index", "Alerts"),
    ],
    "crew": [
        ("crew.home", "My unit"),
    ],
    "coordinator": [
        ("center.board", "Regional board"),
        ("center.units", "Units"),
        ("analytics.center_view", "Analytics"),
        ("center.audit", "Audit log"),
        ("center.health", "Silo health"),
        ("alerts.index", "Alerts"),
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
        ("alerts.index", "Alerts"),
    ],
}


#: What an organisation administrator's navigation adds to their role's.
ORG_ADMIN_NAVIGATION = {
    "hospital": [
        ("alerts.own_defaults", "Alert defaults"),
        ("alerts.webhooks_index", "Webhooks"),
    ],
    "ems": [
        ("ems.crew_accounts", "Crew accounts"),
        ("alerts.own_defaults", "Alert defaults"),
        ("alerts.webhooks_index", "Webhooks"),
    ],
}


def navigation():
    """The navigation entries of the signed-in user's role whose endpoints exist (and, for an
    organisation administrator, their organisation's pages)."""
    if not current_user.is_authenticated:
        return []
    endpoints = current_app.view_functions
    entries = list(NAVIGATION.get(current_user.role, []))
    if getattr(current_user, "is_org_admin", False):
        entries += ORG_ADMIN_NAVIGATION.get(current_user.role, [])
    return [(ep, label) for ep, label in entries if ep in endpoints]


def _live_since():
    """The last signal id when a live page is rendered (its stream replays from there)."""
    try:
        return hub.latest_id()
    except Exception:  # the center (where signals are kept) is unreachable: no replay point

        db.session.rollback()
        return None


#: The most links :func:`cached_url_for` keeps per app (then it starts again from none).
URL_CACHE_LIMIT = 4096


def cached_url_for(app):
    """The templates' ``url_for``: ``app.url_for`` remembering each link it built.

    A page's links are the same on every request (the layout's navigation, stylesheet and
    scripts; a board's rows and pager for as long as they stand), and building one through
    werkzeug's URL map costs some tens of microseconds.  A link is remembered by the request's
    script root, the blueprint (for a ``.name`` endpoint), the endpoint and its values (with
    their types, in order, since their order is the query string's); at most
    :data:`URL_CACHE_LIMIT` per app.  Links with an ``_anchor``, ``_external``, ``_scheme`` or
    ``_method`` argument, with a value that cannot be a dictionary key, or built outside a
    request are built every time; an error (werkzeug's ``BuildError``) is raised as by
    ``url_for``, and never remembered.
    """
    cache = {}
    build = app.url_for

    def url_for(endpoint, **values):
        if not has_request_context() or any(key[:1] == "_" for key in values):
            return build(endpoint, **values)
        current = request._get_current_object()
        try:
            key = (current.script_root, current.blueprint if endpoint[:1] == "." else None, endpoint,
                   tuple((name, type(value), value) for name, value in values.items()))
            url = cache.get(key)
        except TypeError:  # a value that cannot be a key (a list): build it
            return build(endpoint, **values)
        if url is None:
            url = build(endpoint, **values)
            if len(cache) >= URL_CACHE_LIMIT:
                cache.clear()
            cache[key] = url
        return url

    return url_for


def register(app):
    app.jinja_env.globals["url_for"] = cached_url_for(app)
    app.jinja_env.filters["localtime"] = _localtime_filter
    app.jinja_env.filters["age"] = format_age
    app.jinja_env.filters["oxygen"] = hospital_vocab.oxygen_flow
    app.jinja_env.filters["audit_lines"] = audit_trail.readable
    app.jinja_env.globals["audit_subject"] = audit_trail.subject
    app.jinja_env.globals["eta_passed"] = bidding.eta_passed
    app.jinja_env.globals["best_bid"] = bidding.best_bid
    app.jinja_env.filters["since"] = relative_time
    app.jinja_env.globals["eta_clock"] = eta_clock
    app.jinja_env.globals["late_of"] = late_of
    app.jinja_env.globals["late_badge"] = late_badge
    app.jinja_env.globals.update(
        navigation=navigation,
        live_since=_live_since,
        unavailable_silos=degraded.unavailable,
        SILO_BANNERS=degraded.BANNERS,
        LEVEL_LABELS=vocab.LEVEL_LABELS,
        MOBILITIES=vocab.MOBILITIES,
        URGENCIES=vocab.URGENCIES,
        ROLES=vocab.ROLES,
        UNIT_STATUSES=vocab.UNIT_STATUSES,
        CANCEL_REASONS=hospital_vocab.CANCEL_REASONS,
        AGE_GROUPS=hospital_vocab.AGE_GROUPS,
        ISOLATIONS=hospital_vocab.ISOLATIONS,
        INVITE_MODES=hospital_vocab.INVITE_MODES,
        FIELD_LABELS=hospital_vocab.FIELD_LABELS,
        dispatch_state=vocab.trip_dispatch_state,
        booking_hint=scheduling.booking_hint,
        waiting_of=returns.waiting,
        CARE_RULES=care_rules.CARE_RULES,
        care_override_summary=care_rules.override_summary,
        DISPATCH_STATES=vocab.DISPATCH_STATES,
        STATUS_LABELS=vocab.TRIP_STATUS_LABELS,
    )

    @app.context_processor
    def _now():
        return {"now_utc": utcnow()}
