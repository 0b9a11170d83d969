"""Percentiles: medians and 90th percentiles of minutes, computed over a whole period each time.

Medians and percentiles do not add up across days, so unlike the counts they are never stored.
In SQL: ``percentile_cont`` on PostgreSQL (each query on its own connection, overlapping the
caller's other reads), ``ORDER BY ... LIMIT/OFFSET`` on SQLite, the same linear interpolation
so both agree.  :func:`percentile_of` does the same over a Python list, for the few measures
read row by row.
"""
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ... import server_timing
from ...extensions import db, engine
from .sqltime import dialect_of


@dataclass
class PercentileQuery:
    """Percentiles of measure expressions (``{name: expr}``) over rows matching ``where``, per group."""

    measures: dict
    where: list
    group: object = None
    fractions: tuple = (0.5, 0.9)

    @cached_property
    def postgresql_statement(self):
        """The query's PostgreSQL statement (:func:`_percentile_statement`), built once."""
        return _percentile_statement(self)


def start_percentiles(silo, queries, params=None):
    """Start :class:`PercentileQuery` s; returns a function that waits for and returns their results.

    ``params``: the values of the queries' bind parameters, if any (a dict).

    Each result is ``{group value: {name: {"n": count, fraction: value}}}``
    (``percentile_cont`` semantics, NULLs left out, group value ``None`` when
    ungrouped).  On PostgreSQL each query is one ``percentile_cont(ARRAY[...])
    WITHIN GROUP`` statement (one sort per measure) run at once on its own
    connection, so the caller's other queries overlap with them; on SQLite the
    ordered values are read with ``ORDER BY ... LIMIT/OFFSET`` when asked for.
    """
    params = params or {}
    if dialect_of(silo) != "postgresql":
        return lambda: [_sqlite_percentiles(query, params) for query in queries]
    silo_engine = engine(silo)

    def read(stmt):
        with silo_engine.connect() as conn:
            return conn.execute(stmt, params).all()

    pool = ThreadPoolExecutor(max_workers=len(queries))
    futures = [pool.submit(server_timing.carry(read), query.postgresql_statement) for query in queries]
    pool.shutdown(wait=False)  # the threads end when their statement has answered

    def results():
        return [_percentile_rows(query, future.result()) for query, future in zip(queries, futures, strict=True)]

    return results


def _percentile_statement(query):
    """One PostgreSQL statement: per group, the count and ``percentile_cont`` array of each measure."""
    fractions = postgresql.array([sa.literal(f, sa.Float) for f in query.fractions])
    columns = []
    for expr in query.measures.values():
        columns += [sa.func.count(expr),
                    sa.func.percentile_cont(fractions, type_=postgresql.ARRAY(sa.Float)).within_group(expr)]
    stmt = sa.select(*([query.group] if query.group is not None else []), *columns).where(*query.where)
    return stmt.group_by(query.group) if query.group is not None else stmt


def _percentile_rows(query, rows):
    """The rows of :func:`_percentile_statement` as ``{group: {name: {"n": count, fraction: value}}}``."""
    result = {}
    empty = [None] * len(query.fractions)
    for row in rows:
        key, values = (row[0], row[1:]) if query.group is not None else (None, row)
        result[key] = {
            name: {"n": values[2 * i], **dict(zip(query.fractions, values[2 * i + 1] or empty, strict=True))}
            for i, name in enumerate(query.measures)
        }
    return result


def _sqlite_percentiles(query, params):
    """Counts in one statement, then two ordered values per percentile (LIMIT 2 OFFSET k)."""
    group = query.group
    stmt = sa.select(*([group] if group is not None else []),
                     *[sa.func.count(expr) for expr in query.measures.values()]).where(*query.where)
    if group is not None:
        stmt = stmt.group_by(group)
    result = {}
    for row in db.session.execute(stmt, params).all():
        key, counts = (row[0], row[1:]) if group is not None else (None, row)
        entry = {}
        for (name, expr), n in zip(query.measures.items(), counts, strict=True):
            entry[name] = {"n": n}
            conditions = list(query.where) + [expr.isnot(None)]
            if group is not None:
                conditions.append(group == key)
            for f in query.fractions:
                entry[name][f] = _sqlite_percentile(expr, conditions, n, f, params)
        result[key] = entry
    return result


def _sqlite_percentile(expr, conditions, n, fraction, params):
    """Linear interpolation between the two ordered values around ``fraction * (n - 1)``."""
    if not n:
        return None
    position = fraction * (n - 1)
    low = math.floor(position)
    values = db.session.execute(
        sa.select(expr).where(*conditions).order_by(expr).limit(2).offset(low), params
    ).scalars().all()
    if not values:
        return None
    if len(values) == 1 or position == low:
        return float(values[0])
    return float(values[0]) + (float(values[1]) - float(values[0])) * (position - low)


def percentile_of(values, fraction):
    """Linear-interpolated percentile (as ``percentile_cont``) of a list of numbers, rounded to
    one decimal; ``fraction`` in [0, 1]; None when the list is empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (position - low), 1)
