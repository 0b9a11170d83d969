"""Alerts of the signed-in user (every role), their settings, and for the center the
organisations' defaults (administrators) and the escalation ladder's acknowledgements.

An organisation administrator (a hospital or EMS user with ``org_admin``) sets their own
organisation's defaults and runs its webhooks and their deliveries; another organisation's
are not found (404) for them.  A center administrator runs every organisation's.

Everything here reads and writes the center silo only: with the center down these pages
answer 503 naming it, and every other page goes on.
"""
from functools import wraps

from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from ..auth.routes import roles_required
from ..localtime import to_local
from ..models.base import row_id
from ..services import escalation, registry, session_trust, submissions, webhooks
from ..services.alerts import inbox as alert_inbox
from ..services.alerts import kinds as alert_kinds
from ..services.alerts import settings as alert_settings
from ..services.deliveries import records as delivery_records
from ..views import SEE_FIELDS, act, discard, found
from .forms import ButtonForm, settings_form_class, webhook_form_class

bp = Blueprint("alerts", __name__, url_prefix="/alerts")
FEED_LIMIT = 20


@bp.before_request
def _desks_only():
    """Crews are refused here (403): no alert kind is theirs, and their one page, ``/crew/``,
    follows their unit's trips live."""
    if current_user.is_authenticated and current_user.role == "crew":
        abort(403)


def organisation_admins(*center_roles):
    """Allow ``center_roles`` and organisation administrators; any other signed-in user gets 403."""

    def decorator(view):
        @wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if current_user.role not in center_roles and not current_user.is_org_admin:
                abort(403)
            return view(*args, **kwargs)

        return wrapped

    return decorator


def own_scope():
    """The organisation scope an organisation administrator is limited to; None for the center."""
    if current_user.is_org_admin:
        return alert_settings.org_scope(current_user.role, current_user.hospital_id, current_user.agency_id)
    return None


def _abort(message, status):
    """A refusal with no page of its own: the error page of ``status`` with ``message``."""
    abort(status, message)


@bp.route("/")
@login_required
def index():
    """The signed-in user's alerts, newest first; for the center also the open escalations.

    Refuses: 503 the center is unreachable."""
    session_trust.require_center()
    rows = alert_inbox.recent(current_user.id)
    open_escalations = escalation.open_escalations() if current_user.is_center else []
    return render_template("alerts/index.html", alerts=rows, unread=alert_inbox.unread_count(current_user.id),
                           escalations=open_escalations, form=ButtonForm(), labels=alert_kinds.KIND_LABELS)


def _feed_entry(alert):
    return {"id": alert.id, "public_id": alert.public_id, "kind": alert.kind, "title": alert.title,
            "reference": alert.reference, "link": alert.link,
            "open": url_for(".open_alert", public_id=alert.public_id),
            "created_at": alert.created_at.isoformat() + "Z", "read": alert.read_at is not None}


@bp.route("/feed")
@login_required
def feed():
    """JSON for the page's script: ``{"unread": n, "latest": id, "alerts": [...]}``, the user's
    own alerts after ``?after=<id>`` (oldest first, at most 20), or none without it.

    Refuses: 400 an ``after`` that is not an alert id (JSON ``error``); 503 the center is
    unreachable."""
    session_trust.require_center()
    raw = request.args.get("after")
    after = None
    if raw is not None:
        after = 0 if raw == "0" else row_id(raw)
        if after is None:
            return jsonify(error="after must be an alert id"), 400
    rows = alert_inbox.recent(current_user.id, FEED_LIMIT, after) if after is not None else []
    latest = alert_inbox.recent(current_user.id, 1)
    return jsonify(unread=alert_inbox.unread_count(current_user.id), latest=latest[0].id if latest else 0,
                   alerts=[_feed_entry(a) for a in rows])


@bp.route("/<public_id>/open", methods=["POST"])
@login_required
def open_alert(public_id):
    """Mark the alert read and go to its item (302 to its link, or to the alerts page).

    Refuses: 404 no such alert of the signed-in user; 503 the center is unreachable."""
    session_trust.require_center()
    alert = _alert_or_404(public_id)
    link = alert.link or url_for(".index")
    return act(lambda: alert_inbox.mark_read(current_user.id, public_id),
               done=lambda _: redirect(link if link.startswith("/") and not link.startswith("//")
                                       else url_for(".index")),
               refused=_abort)


def _alert_or_404(public_id):
    """The signed-in user's alert ``public_id``, else 404 (another user's is not found)."""
    alert = alert_inbox.own_alert(current_user.id, public_id)
    if alert is None:
        abort(404)
    return alert


@bp.route("/read", methods=["POST"])
@login_required
def read_all():
    """Mark every alert of the signed-in user read.

    Refuses: 503 the center is unreachable."""
    session_trust.require_center()
    return act(lambda: alert_inbox.mark_read(current_user.id),
               done=lambda count: found(".index", f"Marked {count} alert{'s' if count != 1 else ''} read."
                                        if count else "No unread alerts.", "info"),
               refused=_abort)


# --- settings ------------------------------------------------------------------------------

def _settings_page(form, status=200, **context):
    return render_template("alerts/settings.html", form=form, **context), status


def _apply(form, scope, group, back, context):
    """Save the settings form for ``scope``; 302 to ``back``, or the form again (400) with the
    refusal on its kinds."""
    def refused(message, _status):
        form.enabled.errors = [message]
        return _settings_page(form, 400, **context)

    return act(
        lambda: alert_settings.save_settings(scope, group, form.enabled.data or [],
                                     getattr(form, "levels", None) and form.levels.data or [],
                                     getattr(form, "urgencies", None) and form.urgencies.data or [],
                                     user_id=current_user.id, email_kinds=form.email.data or [],
                                     digest=bool(form.digest.data)),
        done=lambda _: redirect_with(back, "Alert settings saved."),
        refused=refused)


def redirect_with(location, message, category="success"):
    """302 to ``location`` (a URL) with a flashed ``message``."""
    flash(message, category)
    return redirect(location)


def _form_data(choices):
    new = choices.get(alert_kinds.NEW_REQUEST)
    digest = choices.pop(alert_kinds.DIGEST, None)
    data = {"enabled": [kind for kind, choice in choices.items() if choice.enabled],
            "email": [kind for kind, choice in choices.items() if choice.enabled and choice.email],
            "digest": bool(digest and digest.source != "default" and digest.enabled)}
    if new is not None:
        data.update(levels=new.levels, urgencies=new.urgencies)
    return data


@bp.route("/settings", methods=["GET", "POST"])
@login_required
def settings():
    """The user's own alert kinds on or off; "Use my organisation's defaults" drops them.

    Refuses: 400 a form not filled in right or kinds, levels or urgencies not offered; 503 the
    center is unreachable."""
    session_trust.require_center()
    kinds = alert_kinds.kinds_for(current_user.role)
    form_class = settings_form_class(kinds)
    choices = alert_settings.choices_for(current_user)
    context = dict(kinds=kinds, sources={k: c.source for k, c in choices.items() if k != alert_kinds.DIGEST},
                   title="My alerts", reset=True, reset_form=ButtonForm())
    if request.method == "GET":
        return _settings_page(form_class(data=_form_data(choices)), **context)
    form = form_class()
    if not form.validate_on_submit():
        return _settings_page(form, 400, **context)
    return _apply(form, alert_settings.user_scope(current_user.id), alert_kinds.group_of(current_user.role),
                  url_for(".settings"), context)


@bp.route("/settings/reset", methods=["POST"])
@login_required
def reset_settings():
    """Drop the user's own alert settings: their organisation's defaults apply again.

    Refuses: 400 the button's form altered; 503 the center is unreachable."""
    session_trust.require_center()
    form = ButtonForm()
    if not form.validate_on_submit():
        abort(400)
    return act(lambda: alert_settings.clear_user_settings(current_user.id),
               done=lambda _: found(".settings", "Your organisation's default alert settings apply again."),
               refused=_abort)


def _organisation(kind, org_id):
    """(scope, role group, name) of an organisation whose defaults an admin sets; 404 if unknown,
    and for an organisation administrator if it is not their own."""
    if current_user.is_org_admin and (kind, org_id) != _own_kind_and_id():
        abort(404)
    if kind == "center" and org_id == 0:
        return "center", "center", "Coordinators and administrators"
    org = registry.organisation(kind, org_id) if row_id(org_id) else None
    if org is None:
        abort(404)
    group = "hospital" if kind == "hospital" else "ems"
    return alert_settings.org_scope(group, hospital_id=org.id, agency_id=org.id), group, org.name


def _own_kind_and_id():
    """``(kind, id)`` of the signed-in organisation administrator's organisation in the URLs."""
    if current_user.role == "hospital":
        return "hospital", current_user.hospital_id
    return "agency", current_user.agency_id


@bp.route("/defaults/mine", methods=["GET", "POST"])
@organisation_admins()
def own_defaults():
    """An organisation administrator's own organisation's defaults (the navigation's link).

    Refuses: 400 a form not filled in right; 503 the center is unreachable."""
    session_trust.require_center()
    return _defaults_form(*_own_kind_and_id())


@bp.route("/defaults/<kind>/<int:org_id>", methods=["GET", "POST"])
@organisation_admins("admin")
def defaults(kind, org_id):
    """An organisation's default alert settings (its users' own settings win over them).

    Refuses: 404 no such organisation (or, for an organisation administrator, another one);
    400 a form not filled in right; 503 the center is unreachable."""
    session_trust.require_center()
    return _defaults_form(kind, org_id)


def _defaults_form(kind, org_id):
    scope, group, name = _organisation(kind, org_id)
    kinds = alert_kinds.KINDS[group]
    form_class = settings_form_class(kinds)
    context = dict(kinds=kinds, sources={}, title=f"Default alerts: {name}", reset=False)
    if request.method == "GET":
        return _settings_page(form_class(data=_form_data(alert_settings.scope_choices(scope, group))), **context)
    form = form_class()
    if not form.validate_on_submit():
        return _settings_page(form, 400, **context)
    return _apply(form, scope, group, url_for(".defaults", kind=kind, org_id=org_id), context)


@bp.route("/defaults")
@roles_required("admin")
def defaults_index():
    """Every organisation, each a link to its default alert settings.

    Refuses: 503 the center is unreachable."""
    session_trust.require_center()
    hospitals, agencies = registry.organisations()
    return render_template("alerts/defaults.html", hospitals=hospitals, agencies=agencies)


# --- escalations ---------------------------------------------------------------------------

@bp.route("/escalations/<public_id>/acknowledge", methods=["POST"])
@roles_required("coordinator", "admin")
def acknowledge(public_id):
    """A coordinator or admin has the request in hand: its escalation ladder stops.

    Refuses: 400 the button's form altered; 404 no such escalation; 409 already acknowledged
    (the alerts page says by whom); 503 the center is unreachable."""
    session_trust.require_center()
    form = ButtonForm()
    if not form.validate_on_submit():
        abort(400)
    return act(lambda: escalation.acknowledge(public_id, current_user, request.remote_addr),
               done=lambda row: found(".index", f"Acknowledged {row.reference}; the escalation stops."),
               refused=_index_refused)


def _index_refused(message, status):
    """The alerts page again with a refusal's ``message``."""
    return render_template("alerts/index.html", alerts=alert_inbox.recent(current_user.id),
                           unread=alert_inbox.unread_count(current_user.id),
                           escalations=escalation.open_escalations(), form=ButtonForm(),
                           labels=alert_kinds.KIND_LABELS, message=message), status


@bp.app_template_global()
def alert_time(value):
    """An alert's time in the region's zone, e.g. "Tue 01 Dec 08:15"; "—" for None."""
    local = to_local(value)
    return local.strftime("%a %d %b %H:%M") if local else "—"


# --- webhooks (administrators) -----------------------------------------------------------------

def _organisations():
    """``[(scope, name)]`` of every organisation an endpoint may be registered for (for an
    organisation administrator, their own alone)."""
    mine = own_scope()
    if mine is not None:
        org = current_user.hospital if current_user.role == "hospital" else current_user.agency
        label = "Hospital" if current_user.role == "hospital" else "EMS agency"
        return [(mine, f"{label}: {org.name}")]
    hospitals, agencies = registry.organisations()
    return ([("center", "Transport center (coordinators and administrators)")]
            + [(alert_settings.org_scope("hospital", hospital_id=h.id), f"Hospital: {h.name}") for h in hospitals]
            + [(alert_settings.org_scope("ems", agency_id=a.id), f"EMS agency: {a.name}") for a in agencies])


def _webhooks_page(form, status=200, secret=None):
    names = dict(_organisations())
    return render_template("alerts/webhooks.html", form=form, endpoints=webhooks.endpoints(own_scope()), names=names,
                           labels=alert_kinds.KIND_LABELS, secret=secret, button=ButtonForm()), status


@bp.route("/webhooks", methods=["GET", "POST"])
@organisation_admins("admin")
def webhooks_index():
    """The organisations' webhook endpoints; register one (its signing secret is shown once).

    Refuses: 400 a form not filled in right, an address not https://, or kinds the
    organisation's users never get; 409 a form token used for something else; 503 the center is
    unreachable.  A form sent again answers 303 to the list."""
    session_trust.require_center()
    form_class = webhook_form_class(_organisations(), list(alert_kinds.KIND_LABELS.items()))
    if request.method == "GET":
        return _webhooks_page(form_class())
    form = form_class()
    if submissions.previous("center", form.submission_id.data, "webhook", current_user.id) is not None:
        return _webhook_repeat()
    if not form.validate_on_submit():
        return _webhooks_page(form, 400)
    allow_loopback = current_app.config["MEDPORT_WEBHOOK_ALLOW_LOOPBACK_HTTP"]
    return act(
        lambda: _register(form, allow_loopback),
        done=lambda endpoint: _webhooks_page(form_class(formdata=None), secret=(endpoint.url, endpoint.secret))
        if endpoint is not None else _webhook_repeat(),
        refused=lambda message, status: _webhooks_page(_on_form(form, message), status),
        form=form)


def _register(form, allow_loopback):
    """Claim the form's token and register its endpoint; None when the form was sent before."""
    claim = submissions.claim("center", form.submission_id.data, "webhook", current_user.id)
    if claim.repeat:
        return None
    endpoint = webhooks.register(form.organisation.data, form.url.data, form.kinds.data or [],
                                 current_user, request.remote_addr, allow_loopback)
    claim.created(endpoint.public_id)
    return endpoint


def _on_form(form, message):
    """``form`` with a refusal's page ``message`` among its form errors (unless it went onto a
    field)."""
    if message != SEE_FIELDS:
        form.form_errors.append(message)
    return form


def _webhook_repeat():
    """The registration form sent again: the endpoint its first send registered stands."""
    discard()
    flash("This endpoint was already registered; its secret was shown when it was.", "info")
    return redirect(url_for(".webhooks_index"), 303)


@bp.route("/webhooks/<public_id>/remove", methods=["POST"])
@organisation_admins("admin")
def remove_webhook(public_id):
    """Stop a webhook endpoint (kept, inactive, for its deliveries' record).

    Refuses: 400 the button's form altered; 404 no such active endpoint (or another
    organisation's); 503 the center is unreachable."""
    session_trust.require_center()
    if not ButtonForm().validate_on_submit():
        abort(400)
    return act(lambda: webhooks.remove_or_refuse(public_id, current_user, request.remote_addr, scope=own_scope()),
               done=lambda endpoint: found(".webhooks_index",
                                           f"Endpoint {endpoint.url} removed; nothing more is sent to it."),
               refused=_abort)


# --- deliveries (the center) -------------------------------------------------------------------

@bp.route("/deliveries")
@organisation_admins("coordinator", "admin")
def deliveries_index():
    """Every email and webhook delivery with its state; the parked ones (dead letters) replayable.
    An organisation administrator sees only the webhook deliveries of their organisation's
    endpoints.

    Newest first, a page at a time ("Next page" carries ``after``).

    Refuses: 400 a state or channel not listed, or a page cursor not ours; 503 the center is
    unreachable."""
    session_trust.require_center()
    scope = own_scope()
    status = request.args.get("status") or None
    channel = request.args.get("channel") or None
    channels = ("webhook",) if scope is not None else ("email", "webhook")
    if status not in (None, *delivery_records.STATUSES) or channel not in (None, *channels):
        return render_template("alerts/deliveries.html", rows=[], counts={}, status=None, channel=None,
                               channels=channels, button=ButtonForm(), next_after=None, query={}, paged=False,
                               message="Choose a listed state and channel."), 400
    after = request.args.get("after") or None
    query = {key: value for key, value in (("status", status), ("channel", channel)) if value}
    return act(lambda: delivery_records.page(status, channel, scope, after),
               done=lambda page: render_template(
                   "alerts/deliveries.html", rows=page.rows, counts=delivery_records.counts(scope), status=status,
                   channel=channel, channels=channels, button=ButtonForm(), message=None,
                   next_after=page.after, query=query, paged=bool(after)),
               refused=_abort)


@bp.route("/deliveries/<public_id>/replay", methods=["POST"])
@organisation_admins("coordinator", "admin")
def replay_delivery(public_id):
    """Queue a parked delivery again; it is sent at the sender's next pass.

    Refuses: 400 the button's form altered; 404 no such parked delivery (or, for an
    organisation administrator, another organisation's); 503 the center is unreachable."""
    session_trust.require_center()
    if not ButtonForm().validate_on_submit():
        abort(400)
    return act(lambda: delivery_records.replay_parked(public_id, scope=own_scope()),
               done=lambda _: found(".deliveries_index", "Queued again; it is sent at the sender's next pass.",
                                    status="parked"),
               refused=_abort)
