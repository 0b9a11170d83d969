"""Analytics: volume, speed, fill, on-time, competition, agencies, units and hospitals.

Every figure is aggregated in SQL by the silo that owns the data and combined here; no trip is
loaded into Python.  The service returns data; the blueprint (``dashboard.analytics``) decides
how it is shown.  One module per concern, imported from where it lives:

- :mod:`.period`: the period and filters, checked (``resolve_period``, ``Scope``), and the SQL
  conditions they put on requests;
- :mod:`.sqltime`: local day and hour of a UTC column, and minutes between two, per dialect;
- :mod:`.percentiles`: medians and 90th percentiles over a whole period;
- :mod:`.cells`: a day's counts per hospital, agency, level and urgency, computed from the
  hospital and EMS silos and summed for a scope;
- :mod:`.stored`: the cells of closed days kept in the center silo, read back, rolled up;
- :mod:`.report`: every figure of the page for a period and a scope;
- :mod:`.export`: tables and the period's trips as CSV, through ``services.csvout``;
- :mod:`.scheduled`: scheduled versus same-day work, will-call release, waiting at pickup.

Nothing is re-exported here: importing the package loads none of them.
"""
