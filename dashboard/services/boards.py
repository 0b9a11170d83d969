"""The open-request boards' order and pages: the hospital's requests, the EMS board and the
center's regional board.

A board shows one page of its rows, in the order the user chose; both are kept in the URL
(``sort=`` and ``page=``), so the live refresh of a board's panel asks for the same page in
the same order.  Ordering, counting and paging are done in SQL (``ORDER BY ... LIMIT ...
OFFSET``), so a board with a thousand open requests reads and renders one page of them.

The sort control's vocabulary, the same on every board:

* ``risk``: at risk first (the center's rule, :func:`dashboard.services.oversight.risk_condition`),
  the most urgent of those first, then the earliest bidding deadline;
* ``urgency``: emergent, urgent, routine; then the earliest pickup;
* ``deadline``: the earliest bidding deadline first;
* ``window``: the earliest pickup time (start of the pickup window) first.

A leading ``-`` reverses the first key (``sort=-deadline``: latest deadline first).  A sort a
board does not offer is refused with :class:`BoardQueryRefused` (400 and a message naming the
ones it does); a page number no pager shows is read as the first page, and one past the last
page shows the last page (the pager says which page it is).
"""
from dataclasses import dataclass

import sqlalchemy as sa

from ..models.hospital import TransportRequest
from ..models.vocabulary import URGENCY_RANK
from .refusals import Refused

#: The sort control's keys and labels (a board may offer more, e.g. the hospital's reference).
SORTS = {"risk": "At risk first", "urgency": "Urgency", "deadline": "Bidding closes",
         "window": "Pickup time"}
#: Rows on one page of a board: at 1280×900 and 1440×900 more than the viewport holds.
PAGE_SIZE = 50
#: The highest page a pager may name; a larger number is read as page 1.
MAX_PAGE = 100_000


class BoardQueryRefused(Refused):
    """A board's query string asks for something the board does not offer (HTTP ``status``)."""

    status = 400


def sort_from(raw, default, offered=SORTS):
    """The sort asked for in ``raw`` (the ``sort`` query argument), checked against ``offered``
    (``{key: label}``); ``default`` when absent or empty.

    Returns the sort as given (``"deadline"``, ``"-window"``...).  Raises
    :class:`BoardQueryRefused` (400) for a key ``offered`` lacks, naming the ones it has."""
    raw = (raw or "").strip()
    if not raw:
        return default
    if raw.removeprefix("-") not in offered:
        names = ", ".join(f"{key} ({label.lower()})" for key, label in offered.items())
        raise BoardQueryRefused(f"This board cannot be sorted that way. Sort by one of: {names}.")
    return raw


def page_from(raw):
    """The page asked for in ``raw`` (the ``page`` query argument): a whole number from 1 to
    :data:`MAX_PAGE`; anything else (absent, not a number, zero, negative, huge) is page 1."""
    raw = (raw or "").strip()
    if raw.isascii() and raw.isdigit() and len(raw) <= len(str(MAX_PAGE)):
        number = int(raw)
        if 1 <= number <= MAX_PAGE:
            return number
    return 1


@dataclass(frozen=True)
class Page:
    """One page of a board: ``number`` (1-based, within ``1..pages``), ``size`` rows a page,
    ``total`` rows in all.  ``first`` and ``last`` are the 1-based positions of its rows
    ("showing 51–100 of 1,000"; both 0 when the board is empty)."""

    number: int
    size: int
    total: int

    @property
    def pages(self):
        return max(1, -(-self.total // self.size))

    @property
    def offset(self):
        return (self.number - 1) * self.size

    @property
    def first(self):
        return self.offset + 1 if self.total else 0

    @property
    def last(self):
        return min(self.total, self.offset + self.size)

    @property
    def has_previous(self):
        return self.number > 1

    @property
    def has_next(self):
        return self.number < self.pages


def page_of(number, total, size=PAGE_SIZE):
    """The :class:`Page` ``number`` of a board of ``total`` rows, moved within its pages."""
    page = Page(1, size, total)
    return Page(max(1, min(number, page.pages)), size, total)


def count_label(count, cap):
    """A count read up to ``cap + 1`` (a bounded count) as a board shows it: ``"<cap>+"`` when
    above ``cap``, else the number (a str)."""
    return f"{cap}+" if count > cap else str(count)


#: Emergent 0, urgent 1, routine 2 (anything else after them), as SQL: built once, as the
#: fixed orders below (an expression is immutable, so statements may share it).
_URGENCY_RANK = sa.case(URGENCY_RANK, value=TransportRequest.urgency, else_=len(URGENCY_RANK))


def urgency_rank():
    """Emergent 0, urgent 1, routine 2 (anything else after them), as SQL."""
    return _URGENCY_RANK


def _keys(key, risk):
    T = TransportRequest
    if key == "risk":
        return [sa.case((risk, 0), else_=1), _URGENCY_RANK, T.bid_deadline]
    if key == "urgency":
        return [_URGENCY_RANK, T.window_start]
    if key == "deadline":
        return [T.bid_deadline]
    if key == "window":
        return [T.window_start]
    raise ValueError(f"unknown board sort {key!r}")


def _order(key, descending, risk=None):
    keys = _keys(key, risk)
    if descending:
        keys[0] = keys[0].desc()
    return (*keys, TransportRequest.id.desc() if descending else TransportRequest.id)


#: The orders that do not depend on a condition, by sort (``"-window"`` too), built once.
_FIXED_ORDERS = {f"{sign}{key}": _order(key, bool(sign))
                 for key in ("urgency", "deadline", "window") for sign in ("", "-")}


def order_by(sort, risk=None):
    """``ORDER BY`` expressions of a board sort (see the module's description), as a new list.

    ``risk`` is the SQL condition of a request at risk; it is needed for ``risk`` only
    (``ValueError`` without it); a sort not in :data:`SORTS` raises ``ValueError``.  Every
    order ends on the request's id, so pages never overlap or skip a row between equal keys.
    The orders of the other sorts are built once and shared."""
    fixed = _FIXED_ORDERS.get(sort)
    if fixed is not None:
        return list(fixed)
    key, descending = sort.removeprefix("-"), sort.startswith("-")
    if key == "risk" and risk is None:
        raise ValueError("the at-risk order needs the at-risk condition")
    return list(_order(key, descending, risk))
