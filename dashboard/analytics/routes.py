"""Analytics pages and CSV exports: the region (center), one hospital, one agency.

A hospital user sees their own hospital only and an EMS user their own agency
only: the filter is fixed to their organisation, and another organisation's id
in the query answers 404.  ``?format=csv&table=NAME`` exports one table with the
same filters; ``table=trips`` streams the period's trips.
"""
from flask import Blueprint, Response, abort, render_template, request, stream_with_context
from flask_login import current_user
from markupsafe import Markup

from ..auth.routes import roles_required
from ..extensions import db
from ..localtime import local_today
from ..models.center import Agency, Hospital
from ..services import analytics, csvout, scheduled_analytics
from .forms import AnalyticsFilterForm

bp = Blueprint("analytics", __name__)

TITLES = {
    "center": "Regional analytics",
    "hospital": "Analytics for your hospital",
    "ems": "Analytics for your agency",
}


@bp.route("/center/analytics")
@roles_required("coordinator", "admin")
def center_view():
    """The whole region, with every filter open."""
    return _analytics("center")


@bp.route("/hospital/analytics")
@roles_required("hospital")
def hospital_view():
    """The signed-in user's hospital: the hospital filter is fixed to it."""
    return _analytics("hospital", hospital=current_user.hospital)


@bp.route("/ems/analytics")
@roles_required("ems")
def ems_view():
    """The signed-in user's agency: requests it was awarded, its bids and units."""
    return _analytics("ems", agency=current_user.agency)


@bp.app_template_filter("analytics_cell")
def analytics_cell(value, kind):
    """A table cell's text: thousands separators, one decimal, a % sign; "—" when there is no value."""
    if value is None:
        return Markup('<span class="muted" title="Not enough data">—</span>')
    if kind == "pct":
        return f"{value:.1f} %"
    if kind in ("int", "num") and isinstance(value, int):
        return f"{value:,}"
    if kind == "num":
        return f"{value:,.1f}" if value >= 1 or value == 0 else f"{value:.2f}"
    return value


def _registry(model):
    return [(row.public_id, row.name, row.id)
            for row in db.session.execute(db.select(model).order_by(model.name)).scalars()]


def _analytics(view, hospital=None, agency=None):
    """Validate the filters, then render the page or answer the CSV export asked for."""
    for fixed, name in ((hospital, "hospital"), (agency, "agency")):
        asked = request.args.get(name)
        if fixed is not None and asked and asked != fixed.public_id:
            abort(404)  # another organisation's data is not found, not forbidden
    args = request.args.copy()
    if "period" not in args and ("start" in args or "end" in args):
        args["period"] = "custom"
    form = AnalyticsFilterForm(
        args, _registry(Hospital), _registry(Agency), local_today(),
        hospital_id=hospital.id if hospital else None, agency_id=agency.id if agency else None,
    )
    wants_csv = args.get("format") == "csv"
    if "format" in args and not wants_csv:
        return _bad_request(form, view, hospital, agency, {"format": "The only export format is csv."})
    if not form.validate():
        errors = {field.name: " ".join(field.errors) for field in form if field.errors}
        return _bad_request(form, view, hospital, agency, errors, as_text=wants_csv)
    period, scope = form.resolved_period, form.scope
    if wants_csv:
        return _export(view, period, scope, args.get("table", ""), form, hospital, agency)
    data = analytics.report(period, scope)
    db.session.commit()  # closed days computed for this page are kept for the next
    include_units = view != "hospital"
    return render_template(
        "analytics/page.html", form=form, view=view, title=TITLES[view], data=data,
        tables={t.name: t for t in analytics.tables(data, include_units=include_units)
                + _scheduled_tables(period, scope)},
        charts=analytics.charts(data), csv_args=form.query_args(),
        fixed_hospital=hospital, fixed_agency=agency, max_days=analytics.MAX_PERIOD_DAYS,
    )


def _bad_request(form, view, hospital, agency, errors, as_text=False):
    """400 with the messages: as text for an export, else the page with the field errors."""
    if as_text:
        body = "The export could not be made:\n" + "\n".join(f"- {m}" for m in errors.values()) + "\n"
        return Response(body, status=400, mimetype="text/plain")
    return render_template(
        "analytics/page.html", form=form, view=view, title=TITLES[view], data=None, tables={},
        charts=[], csv_args={}, fixed_hospital=hospital, fixed_agency=agency, errors=errors,
        max_days=analytics.MAX_PERIOD_DAYS,
    ), 400


def _scheduled_tables(period, scope):
    """The scheduled-work section's tables (``services.scheduled_analytics``)."""
    names = {model: {row_id: name for _public, name, row_id in _registry(model)} for model in (Hospital, Agency)}
    return scheduled_analytics.tables(scheduled_analytics.report(period, scope), names[Hospital], names[Agency])


def _export(view, period, scope, table_name, form, hospital, agency):
    """One table as CSV, or the period's trips streamed from a server-side cursor."""
    names = analytics.table_names(include_units=view != "hospital") + scheduled_analytics.TABLE_NAMES + ("trips",)
    if table_name not in names:
        return _bad_request(form, view, hospital, agency,
                            {"table": f"Unknown table {table_name[:40]!r}; choose one of: "
                                      + ", ".join(names) + "."}, as_text=True)
    stem = f"medport-{view}-{table_name}-{period.start.isoformat()}-{period.end.isoformat()}"
    if table_name == "trips":
        return csvout.response(stream_with_context(analytics.trips_csv(period, scope)), f"{stem}.csv")
    if table_name in scheduled_analytics.TABLE_NAMES:
        table = next(t for t in _scheduled_tables(period, scope) if t.name == table_name)
        return csvout.response(analytics.csv_text(table), f"{stem}.csv")
    data = analytics.report(period, scope)
    db.session.commit()  # closed days computed for this export are kept
    table = next(t for t in analytics.tables(data, include_units=view != "hospital") if t.name == table_name)
    return csvout.response(analytics.csv_text(table), f"{stem}.csv")
