"""Analytics pages and CSV exports: the region (center), one hospital, one agency.

A hospital user sees their own hospital only and an EMS user their own agency
only: the filter is fixed to their organisation, and another organisation's id
in the query answers 404.  ``?format=csv&table=NAME`` exports one table with the
same filters; ``table=trips`` streams the period's trips.  The figures come from
``services.analytics``; how they are laid out, from :mod:`.presentation`.
"""
from flask import Blueprint, Response, abort, render_template, request, stream_with_context
from flask_login import current_user

from ..auth.routes import roles_required
from ..localtime import local_today
from ..services import analytics_reads, csvout
from ..services.analytics import export, report, scheduled
from ..services.analytics.period import MAX_PERIOD_DAYS
from ..views import keep
from . import presentation
from .forms import AnalyticsFilterForm

bp = Blueprint("analytics", __name__)
bp.add_app_template_filter(presentation.analytics_cell, "analytics_cell")


@bp.route("/center/analytics")
@roles_required("coordinator", "admin")
def center_view():
    """The whole region, with every filter open; or one of its tables as CSV.

    Refuses: 403 a signed-in user other than a coordinator or an admin; 400 a period or filter
    it cannot show (the page with the field messages), or for ``format=csv`` an unknown table
    or another format (the messages as text).
    """
    return _analytics("center")


@bp.route("/hospital/analytics")
@roles_required("hospital")
def hospital_view():
    """The signed-in user's hospital (the hospital filter is fixed to it); or a table as CSV.

    Refuses: 403 a signed-in user of another role; 404 another hospital in ``?hospital=``;
    400 a period or filter it cannot show (the page with the field messages), or for
    ``format=csv`` an unknown table (units included: not this view's) or another format (the
    messages as text).
    """
    return _analytics("hospital", hospital=current_user.hospital)


@bp.route("/ems/analytics")
@roles_required("ems")
def ems_view():
    """The signed-in user's agency: requests it was awarded, its bids and units; or a table as CSV.

    Refuses: 403 a signed-in user of another role; 404 another agency in ``?agency=``; 400 a
    period or filter it cannot show (the page with the field messages), or for ``format=csv``
    an unknown table or another format (the messages as text).
    """
    return _analytics("ems", agency=current_user.agency)


def _analytics(view, hospital=None, agency=None):
    """Validate the filters, then render the page or answer the CSV export asked for."""
    for fixed, name in ((hospital, "hospital"), (agency, "agency")):
        asked = request.args.get(name)
        if fixed is not None and asked and asked != fixed.public_id:
            abort(404)  # another organisation's data is not found, not forbidden
    args = request.args.copy()
    if "period" not in args and ("start" in args or "end" in args):
        args["period"] = "custom"
    hospitals, agencies = analytics_reads.hospitals(), analytics_reads.agencies()
    form = AnalyticsFilterForm(
        args, hospitals, agencies, local_today(),
        hospital_id=hospital.id if hospital else None, agency_id=agency.id if agency else None,
    )
    wants_csv = args.get("format") == "csv"
    if "format" in args and not wants_csv:
        return _bad_request(form, view, hospital, agency, {"format": "The only export format is csv."})
    if not form.validate():
        errors = {field.name: " ".join(field.errors) for field in form if field.errors}
        return _bad_request(form, view, hospital, agency, errors, as_text=wants_csv)
    period, scope = form.resolved_period, form.scope
    names = _names(hospitals), _names(agencies)
    if wants_csv:
        return _export(view, period, scope, args.get("table", ""), form, hospital, agency, names)
    include_units = view != "hospital"
    data = report.report(period, scope, units=include_units)
    keep()  # closed days computed for this page are kept for the next
    return render_template(
        "analytics/page.html", form=form, view=view, title=presentation.TITLES[view], data=data,
        tables={t.name: t for t in presentation.tables(data, include_units=include_units)
                + _scheduled_tables(period, scope, names)},
        charts=presentation.charts(data), csv_args=form.query_args(),
        fixed_hospital=hospital, fixed_agency=agency, max_days=MAX_PERIOD_DAYS,
    )


def _names(registry):
    """``{registry id: name}`` of ``[(public_id, name, registry id)]``."""
    return {row_id: name for _public, name, row_id in registry}


def _bad_request(form, view, hospital, agency, errors, as_text=False):
    """400 with the messages: as text for an export, else the page with the field errors."""
    if as_text:
        body = "The export could not be made:\n" + "\n".join(f"- {m}" for m in errors.values()) + "\n"
        return Response(body, status=400, mimetype="text/plain")
    return render_template(
        "analytics/page.html", form=form, view=view, title=presentation.TITLES[view], data=None,
        tables={}, charts=[], csv_args={}, fixed_hospital=hospital, fixed_agency=agency,
        max_days=MAX_PERIOD_DAYS,
    ), 400


def _scheduled_tables(period, scope, names):
    """The scheduled-work section's tables; ``names``: ({hospital id: name}, {agency id: name})."""
    return presentation.scheduled_tables(scheduled.report(period, scope), *names)


def _export(view, period, scope, table_name, form, hospital, agency, names):
    """One table as CSV, or the period's trips streamed from a server-side cursor."""
    include_units = view != "hospital"
    choices = presentation.table_names(include_units=include_units) + presentation.SCHEDULED_TABLE_NAMES + ("trips",)
    if table_name not in choices:
        return _bad_request(form, view, hospital, agency,
                            {"table": f"Unknown table {table_name[:40]!r}; choose one of: "
                                      + ", ".join(choices) + "."}, as_text=True)
    stem = f"medport-{view}-{table_name}-{period.start.isoformat()}-{period.end.isoformat()}"
    if table_name == "trips":
        return csvout.response(stream_with_context(export.trips_csv(period, scope)), f"{stem}.csv")
    if table_name in presentation.SCHEDULED_TABLE_NAMES:
        table = next(t for t in _scheduled_tables(period, scope, names) if t.name == table_name)
        return csvout.response(export.csv_text(table), f"{stem}.csv")
    data = report.report(period, scope, units=include_units)
    keep()  # closed days computed for this export are kept
    table = next(t for t in presentation.tables(data, include_units=include_units) if t.name == table_name)
    return csvout.response(export.csv_text(table), f"{stem}.csv")
