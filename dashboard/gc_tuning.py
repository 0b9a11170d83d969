"""The garbage collector of a serving worker, tuned for requests that allocate many objects.

Rendering a board of a few hundred rows allocates tens of thousands of container objects (ORM
rows, their state, template output).  With CPython's default first-generation threshold (700)
that is a few hundred collections per request, and every so often a full collection that walks
every object the worker holds, the app's own modules, mappers and compiled templates included
(timed by the collector's own callbacks in one process on a loaded machine: some 10 ms of a 33 ms
regional board and 30 ms of a 60-80 ms analytics page; bench/RESULTS.md).

:func:`tune` (called by ``gunicorn.conf.py`` once the worker has loaded the app) moves what
exists then into the permanent generation (:func:`gc.freeze`), so full collections no longer
walk it, and raises the first threshold to ``MEDPORT_GC_THRESHOLD`` so a request triggers a
few collections rather than hundreds.  Reference counting still frees almost everything at
once; only garbage in reference cycles waits a little longer.
"""
import gc
import os

#: ``MEDPORT_GC_THRESHOLD`` when not set: first-generation allocations between collections.
DEFAULT_THRESHOLD = 20000


def threshold_from(environ=None):
    """The first-generation threshold the environment asks for (0: keep CPython's own).

    Raises ``ValueError`` naming the setting for a value that is not a whole number >= 0.
    """
    environ = os.environ if environ is None else environ
    raw = (environ.get("MEDPORT_GC_THRESHOLD") or "").strip()
    if not raw:
        return DEFAULT_THRESHOLD
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"MEDPORT_GC_THRESHOLD must be a whole number, not {raw!r}.") from None
    if value < 0:
        raise ValueError(f"MEDPORT_GC_THRESHOLD must be 0 or more, not {value}.")
    return value


def tune(threshold):
    """Freeze what the process holds now and set the first-generation threshold.

    ``threshold`` 0 changes nothing (CPython's defaults).  Returns how many objects were frozen.
    """
    if not threshold:
        return 0
    gc.collect()  # what is garbage now is freed, not kept for ever
    gc.freeze()
    _first, second, third = gc.get_threshold()
    gc.set_threshold(threshold, second, third)
    return gc.get_freeze_count()
