"""The audit log (coordinators and administrators): filtered, keyset-paged, exported as CSV,
on the ``center`` blueprint."""
from flask import abort, render_template, request, stream_with_context

from ..localtime import from_local
from ..services import audit_trail, csvout, paging
from ..templating import format_time
from .forms import AuditFilterForm
from .routes import bp, center_only

#: The filters the page's links carry from page to page (and into the export).
FILTER_KEYS = ("user", "action", "entity_type", "entity_id", "since", "until")


def _audit_filters():
    form = AuditFilterForm(request.args)
    if not form.validate():
        return form, None, {}
    filters = audit_trail.AuditFilters(
        user=form.user.data or None, action=form.action.data or None,
        entity_type=form.entity_type.data or None, entity_id=form.entity_id.data or None,
        since=from_local(form.since.data), until=from_local(form.until.data))
    query = {key: request.args[key] for key in FILTER_KEYS if request.args.get(key)}
    return form, filters, query


@bp.route("/audit", endpoint="audit")
@center_only
def audit_log():
    """The audit log, newest first, a page at a time ("Next page" carries ``after``).

    Refuses: 400 filters not understood (an empty list) or a page cursor not ours."""
    form, filters, query = _audit_filters()
    if filters is None:
        return render_template("center/audit.html", form=form, entries=[], next_after=None,
                               query={}, paged=False), 400
    after = request.args.get("after") or None
    # A read: nothing to commit.  (A commit would expire the page's entries, and the template
    # would then reload each one with a query of its own.)
    try:
        page = audit_trail.page(filters, after)
    except paging.CursorRefused as refused:
        abort(refused.status, refused.message)
    return render_template("center/audit.html", form=form, entries=page.rows, next_after=page.after,
                           query=query, paged=bool(after))


@bp.route("/audit/export.csv")
@center_only
def audit_export():
    """Every entry matching the filters as CSV (streamed, newest first).

    Refuses: 400 filters not understood (the message names them)."""
    form, filters, _query = _audit_filters()
    if filters is None:
        problems = " ".join(f"{field.label.text}: {' '.join(field.errors)}" for field in form if field.errors)
        abort(400, f"The filters are not valid ({problems}); correct them on the audit page and export again.")
    lines = audit_trail.csv_lines(filters, lambda value: format_time(value, "%Y-%m-%d %H:%M:%S %Z"))
    return csvout.response(stream_with_context(lines), "medport-audit.csv")
