"""Read statements built once per process and executed with each request's values.

Building a SQLAlchemy statement (coercing every operand, adapting an alias's columns, making a
subquery's column proxies) costs more CPU than running it once it is compiled: a board's
statements took some milliseconds a request to build and well under one to execute.  A read
that has the same shape on every request is therefore built once, by a function decorated
with :func:`built_once` (its arguments choose among the shapes: a tab, a sort, a dialect), with
named bound parameters where the values vary, and executed as
``db.session.execute(statement, {"now": ..., "hospital_id": ...})``; SQLAlchemy's compiled
cache then finds its SQL too.

The vocabulary's condition builders (``dispatch_condition``, the invitation rule) take a time as
a value; :class:`Bound` stands in for one, so the one rule is still the one that writes the SQL.
"""
import collections
import functools

import sqlalchemy as sa


class Bound:
    """A named bound parameter where a condition builder takes a value (a time, an id).

    Comparing a column with it (``T.bid_deadline > now``) puts the parameter ``name`` (of SQL
    type ``type_``) in the statement, through SQLAlchemy's ``__clause_element__`` protocol; it
    is always true, so a builder's ``now or utcnow()`` keeps it.  Arithmetic on it (``now -
    timedelta``) is not supported (``TypeError``): such a condition is built per request."""

    __slots__ = ("param",)

    def __init__(self, name, type_):
        self.param = sa.bindparam(name, type_=type_)

    def __clause_element__(self):
        return self.param

    def __bool__(self):
        return True

    def __repr__(self):
        return f"Bound({self.param.key!r})"


#: The request's time (naive UTC), bound as ``now``.
NOW = Bound("now", sa.DateTime)


def built_once(build):
    """Decorate a function returning a statement: it is built on the first call with given
    (hashable) arguments and the same object returned after (kept for the process's life)."""
    return functools.cache(build)


@functools.lru_cache(maxsize=256)
def _row_type(keys):
    return collections.namedtuple("ReadRow", keys)


def plain_rows(result):
    """The rows of ``result`` (a SQLAlchemy ``Result``) as named tuples, for a list that reads
    many columns of many rows (a board): ``row.reference`` on a named tuple is a plain attribute,
    several times cheaper than on SQLAlchemy's ``Row`` (whose attribute access searches its
    class hierarchy, then asks ``__getattr__``); a board of 250 rows read some 25 columns each.
    Returns ``[row]``, in the result's order; the tuple type is made once per list of column
    names (at most 256 kept).  Raises ``ValueError`` when a column's name is not an identifier
    (an unlabelled expression, a name with a leading underscore): the statements read this way
    label their columns, and a name silently changed would show as nothing on the page."""
    return list(map(_row_type(tuple(result.keys()))._make, result))
