"""The development server's request log without query strings.

``flask run`` serves through werkzeug, whose log line is the request line with its query
string (``"GET /hospital/?q=P-NCEFDT HTTP/1.1" 200 -``); a search may name a patient
reference.  :class:`QueryStringFilter` on the ``werkzeug`` logger logs the path alone, as
gunicorn's access log does (``gunicorn.conf.py``).
"""
import logging
import re

#: A query string: from ``?`` to the end of the URL (a space, a quote, an ANSI colour code).
_QUERY = re.compile(r"\?[^\s\"'\x1b]*")


class QueryStringFilter(logging.Filter):
    """Removes every query string from a record's message; never drops a record."""

    def filter(self, record):
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot be formatted is left as it is
            return True
        if "?" in message:
            record.msg, record.args = _QUERY.sub("", message), ()
        return True


def install(logger_name="werkzeug"):
    """Add the filter to the named logger once; return the filter."""
    logger = logging.getLogger(logger_name)
    for existing in logger.filters:
        if isinstance(existing, QueryStringFilter):
            return existing
    installed = QueryStringFilter()
    logger.addFilter(installed)
    return installed
