"""How the analytics page shows the service's figures: page titles, tables, chart specs, cells.

:mod:`dashboard.services.analytics` returns data; this module lays it out.  A :class:`Table`
is what the page renders and what its CSV export writes (the same rows, through
``services.analytics.export``); each chart spec names the table holding its numbers, for
``static/analytics.js``.  Section titles and hints are in ``templates/analytics/page.html``.
"""
from dataclasses import dataclass

from markupsafe import Markup, escape

from ..models.vocabulary import LEVELS, URGENCIES

#: The page's title per view.
TITLES = {
    "center": "Regional analytics",
    "hospital": "Analytics for your hospital",
    "ems": "Analytics for your agency",
}


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


@dataclass
class Table:
    """One table of numbers: the page renders it, the CSV export writes it."""

    name: str
    title: str
    columns: list  # [(label, kind)] kind: text, int, num, pct
    rows: list

    def body_html(self):
        """The table's ``<tbody>`` rows as markup: per row the first value a row header
        (``<th scope="row">``), the others data cells through :func:`analytics_cell`
        (``class="num"`` unless the column's kind is text); one "Nothing in this period." row
        spanning every column when there is none.  Built in Python: a page shows some
        thousands of cells, and a template loop costs several times more per cell."""
        if not self.rows:
            return Markup('<tr><td colspan="{}" class="empty">Nothing in this period.</td></tr>').format(
                len(self.columns))
        kinds = [kind for _label, kind in self.columns[1:]]
        lines = []
        for first, *values in self.rows:
            # A number's text is analytics_cell's own (digits, separators, "%") and None its
            # "—" markup: neither needs escaping; anything else is escaped.
            cells = "".join(
                f'<td class="num">{analytics_cell(value, kind)}</td>'
                if kind != "text" and (value is None or isinstance(value, int | float))
                else f'<td class="num">{escape(analytics_cell(value, kind))}</td>' if kind != "text"
                else f"<td>{escape(value)}</td>"
                for kind, value in zip(kinds, values, strict=True))
            lines.append(f'<tr><th scope="row">{escape(first)}</th>{cells}</tr>')
        return Markup("\n".join(lines))  # nosec B704 - numbers formatted, the rest escaped above


TABLE_NAMES = ("volume_by_day", "volume_by_hour", "speed", "fill", "cancel_reasons", "on_time",
               "late_minutes", "daily_rates", "bids_per_request", "competition", "agencies", "units",
               "hospitals")


def table_names(include_units=True):
    """The names of the exportable tables, in page order."""
    return tuple(name for name in TABLE_NAMES if include_units or name != "units")


def tables(data, include_units=True):
    """The page's tables in order (a list of :class:`Table`), built from the data of
    ``services.analytics.report.report``; ``include_units=False`` leaves out unit utilisation
    (the hospital view)."""
    volume = data["volume"]
    result = [
        Table("volume_by_day", "Requests per day",
              [("Day", "text"), ("Requests", "int")] + [(lv, "int") for lv in LEVELS]
              + [(label, "int") for label in URGENCIES.values()],
              [[row["day"].isoformat(), row["total"], *row["levels"].values(), *row["urgencies"].values()]
               for row in volume["by_day"]]),
        Table("volume_by_hour", "Requests by hour of day (local time)",
              [("Hour", "text"), ("Requests", "int")],
              [[f"{h:02d}:00", n] for h, n in enumerate(volume["by_hour"])]),
        Table("speed", "Speed (minutes)",
              [("Measure", "text"), ("Requests measured", "int"), ("Median (min)", "num"),
               ("90th percentile (min)", "num")],
              [[s["label"], s["n"], s["p50"], s["p90"]] for s in data["speed"]]),
        Table("fill", "How requests ended up",
              [("Outcome", "text"), ("Requests", "int"), ("Share of requests (%)", "pct")],
              [[o["label"], o["count"], o["share"]] for o in data["fill"]["outcomes"]]),
        Table("cancel_reasons", "Cancellations by reason",
              [("Reason", "text"), ("Cancelled", "int"), ("Share of cancellations (%)", "pct")],
              [[r["label"], r["count"], r["share"]] for r in data["fill"]["reasons"]]),
        Table("on_time", "Pickups against the requested window",
              [("Pickup", "text"), ("Pickups", "int"), ("Share of pickups (%)", "pct")],
              [[r["label"], r["count"], r["share"]] for r in data["on_time"]["rows"]]),
        Table("late_minutes", "Late pickups by minutes after the window",
              [("Late by", "text"), ("Pickups", "int")],
              [[b["label"], b["count"]] for b in data["on_time"]["late_buckets"]]),
        Table("daily_rates", "Awarded and on-time share per day",
              [("Day", "text"), ("Requests", "int"), ("Awarded (%)", "pct"), ("On time (%)", "pct")],
              [[r["day"].isoformat(), r["requests"], r["awarded_share"], r["on_time_share"]]
               for r in data["daily_rates"]]),
        Table("bids_per_request", "Requests by number of bids received",
              [("Bids received", "text"), ("Requests", "int")],
              [[b["label"], b["count"]] for b in data["competition"]["distribution"]]),
        Table("competition", "Competition",
              [("Measure", "text"), ("Value", "num")],
              [["Bids", data["competition"]["bids"]],
               ["Requests", data["competition"]["requests"]],
               ["Bids per request", data["competition"]["per_request"]],
               ["Awarded requests", data["competition"]["awarded"]],
               ["Awarded to a preferred agency", data["competition"]["preferred_awards"]],
               ["Share awarded to a preferred agency (%)", data["competition"]["preferred_share"]]]),
        Table("agencies", "Agencies",
              [("Agency", "text"), ("Bids", "int"), ("Wins", "int"), ("Win rate (%)", "pct"),
               ("Median ETA promised (min)", "num"), ("Median actual arrival (min)", "num"),
               ("Arrivals measured", "int"), ("Completed trips", "int")],
              [[a["name"], a["bids"], a["wins"], a["win_rate"], a["eta_p50"], a["actual_p50"],
                a["arrivals"], a["completed"]] for a in data["agencies"]]),
    ]
    if include_units:
        result.append(Table(
            "units", "Unit utilisation (busy: award to completion; shift: the unit's daily shift)",
            [("Unit", "text"), ("Agency", "text"), ("Busy (h)", "num"), ("On shift (h)", "num"),
             ("Utilisation (%)", "pct"), ("Completed trips", "int")],
            [[u["label"], u["agency"], u["busy_h"], u["shift_h"], u["utilisation"], u["trips"]]
             for u in data["units"]]))
    result.append(Table(
        "hospitals", "Hospitals",
        [("Hospital", "text"), ("Requests", "int"), ("Median time to award (min)", "num"),
         ("Unfilled", "int"), ("Unfilled share (%)", "pct")],
        [[h["name"], h["requests"], h["award_p50"], h["unfilled"], h["unfilled_share"]]
         for h in data["hospitals"]]))
    return result


def charts(data):
    """Chart specifications for static/analytics.js, drawn from the same numbers as the tables.

    A list of ``{"id", "table", "type": bar|line, "stacked", "title", "labels", "y", "datasets":
    [{"label", "data"}]}`` from the data of ``services.analytics.report.report``."""
    volume = data["volume"]
    days = [row["day"].strftime("%d %b") for row in volume["by_day"]]
    return [
        {"id": "volume_level", "table": "volume_by_day", "type": "bar", "stacked": True,
         "title": "Requests per day by level of care", "labels": days, "y": "Requests",
         "datasets": [{"label": lv, "data": [row["levels"][lv] for row in volume["by_day"]]}
                      for lv in LEVELS]},
        {"id": "volume_urgency", "table": "volume_by_day", "type": "bar", "stacked": True,
         "title": "Requests per day by urgency", "labels": days, "y": "Requests",
         "datasets": [{"label": label, "data": [row["urgencies"][u] for row in volume["by_day"]]}
                      for u, label in URGENCIES.items()]},
        {"id": "volume_hour", "table": "volume_by_hour", "type": "bar", "stacked": False,
         "title": "Requests by hour of day", "labels": [f"{h:02d}" for h in range(24)], "y": "Requests",
         "datasets": [{"label": "Requests", "data": volume["by_hour"]}]},
        {"id": "speed", "table": "speed", "type": "bar", "stacked": False,
         "title": "Speed: median and 90th percentile (minutes)",
         "labels": ["Time to first bid", "Time to award", "Award to pickup"], "y": "Minutes",
         "datasets": [{"label": "Median", "data": [s["p50"] for s in data["speed"]]},
                      {"label": "90th percentile", "data": [s["p90"] for s in data["speed"]]}]},
        {"id": "daily_rates", "table": "daily_rates", "type": "line", "stacked": False,
         "title": "Awarded and on-time share per day (%)", "labels": days, "y": "%",
         "datasets": [{"label": "Awarded", "data": [r["awarded_share"] for r in data["daily_rates"]]},
                      {"label": "On time", "data": [r["on_time_share"] for r in data["daily_rates"]]}]},
        {"id": "late_minutes", "table": "late_minutes", "type": "bar", "stacked": False,
         "title": "Late pickups by minutes after the window",
         "labels": [b["label"] for b in data["on_time"]["late_buckets"]], "y": "Pickups",
         "datasets": [{"label": "Pickups", "data": [b["count"] for b in data["on_time"]["late_buckets"]]}]},
        {"id": "bids_per_request", "table": "bids_per_request", "type": "bar", "stacked": False,
         "title": "Requests by number of bids received",
         "labels": [b["label"] for b in data["competition"]["distribution"]], "y": "Requests",
         "datasets": [{"label": "Requests",
                       "data": [b["count"] for b in data["competition"]["distribution"]]}]},
        {"id": "agencies", "table": "agencies", "type": "bar", "stacked": False,
         "title": "Bids and wins per agency",
         "labels": [a["code"] or a["name"] for a in data["agencies"]], "y": "Count",
         "datasets": [{"label": "Bids", "data": [a["bids"] for a in data["agencies"]]},
                      {"label": "Wins", "data": [a["wins"] for a in data["agencies"]]}]},
    ]


# --- the scheduled-work section ---------------------------------------------------------

SCHEDULED_TABLE_NAMES = ("scheduled_volume", "will_call", "delay_hospitals", "delay_agencies")


def scheduled_tables(data, hospitals, agencies):
    """The scheduled-work section's tables (a list of :class:`Table`) from the data of
    ``services.analytics.scheduled.report``; ``hospitals`` and ``agencies`` map registry ids to
    names."""
    volume, will_call, delay = data["volume"], data["will_call"], data["delay"]

    def delay_rows(per, names):
        return sorted(([names.get(key, f"#{key}"), n, round(late, 1), round(not_ready, 1)]
                       for key, (n, late, not_ready) in per.items()), key=lambda r: (-r[1], r[0]))

    columns = [("Name", "text"), ("Pickups", "int"), ("Crew late (min, total)", "num"),
               ("Patient not ready (min, total)", "num")]
    return [
        Table("scheduled_volume", "Scheduled versus same-day requests",
              [("Kind", "text"), ("Requests", "int")],
              [["Scheduled (booked ahead, series, returns)", volume["scheduled"]],
               ["Same-day", volume["same_day"]], ["Of which series occurrences", volume["series"]],
               ["Of which will-call returns", volume["will_call"]]]),
        Table("will_call", "Will-call: patient ready to crew at pickup (minutes)",
              [("Measure", "text"), ("Returns measured", "int"), ("Median (min)", "num"),
               ("90th percentile (min)", "num")],
              [["Release to pickup", will_call["n"], will_call["p50"], will_call["p90"]]]),
        Table("delay_hospitals", "Waiting at pickup by hospital", columns,
              delay_rows(delay["hospitals"], hospitals)),
        Table("delay_agencies", "Waiting at pickup by agency", columns, delay_rows(delay["agencies"], agencies)),
    ]
