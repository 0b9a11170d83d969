"""Password hashing, a bounded number at a time per worker, off a gevent worker's event loop.

A password hash (werkzeug's default, scrypt with N=32768, r=8, p=1: 32 MiB of memory and some
80 ms of one CPU here each) is the costliest thing a request does.  When a shift starts and
everyone signs in at once, running all of them together only makes each slower and the worker's
memory balloon (ten at once: peaks of about 410 MiB per worker).  So each worker runs at most
``MEDPORT_PASSWORD_HASH_CONCURRENCY`` of them at once (default: the number of CPUs this process
may use); the others wait their turn in order, at most ``MEDPORT_PASSWORD_HASH_WAIT_SECONDS``,
after which :class:`HashingBusy` says to try again shortly (the views answer 503 with
``Retry-After``).  The hash's parameters are not changed by any of this.

Under gunicorn's gevent worker (``threading`` monkey-patched) the wait is on a gevent semaphore,
so a waiting sign-in only parks its greenlet, and the hash runs in gevent's thread pool (hashlib's
scrypt releases the GIL), so the worker's other requests and live streams keep moving; elsewhere
(``flask run``, the CLI, tests) the wait is on a ``threading`` semaphore and the hash runs in the
caller's thread.
"""
import math
import os
import threading

from flask import current_app, has_app_context

#: ``MEDPORT_PASSWORD_HASH_WAIT_SECONDS`` when not set.
DEFAULT_WAIT_SECONDS = 10.0


def default_concurrency():
    """The CPUs this process may run on (at least 1): the default bound per worker."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class HashingBusy(Exception):
    """Every hashing slot of this worker stayed taken for the whole wait: the server is in a rush.

    ``retry_after`` is the whole seconds the answer's ``Retry-After`` suggests.
    """

    message = ("Many people are signing in right now. Nothing was changed; "
               "please try again in a few seconds.")

    def __init__(self, retry_after):
        super().__init__(self.message)
        self.retry_after = retry_after


def _gevent_patched():
    try:
        from gevent import monkey  # noqa: PLC0415  (optional: only the production server has gevent)
    except ImportError:  # gevent is only needed by the production server
        return False
    return monkey.is_module_patched("threading")


class HashPool:
    """At most ``size`` password hashes at once; a caller waits at most ``wait_seconds`` for a slot.

    ``running`` and ``peak`` count the hashes under way and the most there ever were at once
    (in this process).
    """

    def __init__(self, size, wait_seconds):
        if size < 1:
            raise ValueError("a hash pool needs at least one slot")
        if wait_seconds <= 0:
            raise ValueError("the wait for a hashing slot must be positive")
        self.size = size
        self.wait_seconds = wait_seconds
        self.running = 0
        self.peak = 0
        self._slots = {}  # "gevent" or "threads" -> semaphore, made at first use (after fork)
        self._count_lock = threading.Lock()

    def _semaphore(self, cooperative):
        kind = "gevent" if cooperative else "threads"
        semaphore = self._slots.get(kind)
        if semaphore is None:
            if cooperative:
                from gevent import get_hub  # noqa: PLC0415  (only reached under gevent)
                from gevent.lock import BoundedSemaphore  # noqa: PLC0415

                semaphore = BoundedSemaphore(self.size)
                pool = get_hub().threadpool
                pool.maxsize = max(pool.maxsize, self.size)
            else:
                semaphore = threading.BoundedSemaphore(self.size)
            semaphore = self._slots.setdefault(kind, semaphore)
        return semaphore

    def run(self, func, *args):
        """``func(*args)`` once a slot is free; raises :class:`HashingBusy` after the wait."""
        cooperative = _gevent_patched()
        semaphore = self._semaphore(cooperative)
        if not semaphore.acquire(timeout=self.wait_seconds):
            raise HashingBusy(retry_after=max(1, math.ceil(self.wait_seconds / 2)))
        try:
            with self._count_lock:
                self.running += 1
                self.peak = max(self.peak, self.running)
            if cooperative:
                from gevent import get_hub  # noqa: PLC0415  (only reached under gevent)

                return get_hub().threadpool.apply(func, args)
            return func(*args)
        finally:
            with self._count_lock:
                self.running -= 1
            semaphore.release()


#: The pool of code running without an app (a script hashing before the app exists).
_fallback = None


def pool():
    """The current app's :class:`HashPool` (made from its configuration at first use)."""
    global _fallback
    if has_app_context():
        extensions = current_app.extensions
        found = extensions.get("medport_hash_pool")
        if found is None:
            config = current_app.config
            found = extensions.setdefault("medport_hash_pool", HashPool(
                config.get("MEDPORT_PASSWORD_HASH_CONCURRENCY") or default_concurrency(),
                config.get("MEDPORT_PASSWORD_HASH_WAIT_SECONDS") or DEFAULT_WAIT_SECONDS))
        return found
    if _fallback is None:
        _fallback = HashPool(default_concurrency(), DEFAULT_WAIT_SECONDS)
    return _fallback


def run_hash(func, *args):
    """``func(*args)``, a password hash function (werkzeug's make or check), run in the current
    app's :class:`HashPool`; returns its result.  Raises :class:`HashingBusy` when no slot came
    free within ``MEDPORT_PASSWORD_HASH_WAIT_SECONDS`` (see the module)."""
    return pool().run(func, *args)
