"""Passwords: how they are hashed and checked (the one place that does), a bounded number at a
time per worker, off a gevent worker's event loop.

The scheme.  New hashes are Argon2id through argon2-cffi, a binding of the reference
implementation: memory 19,456 KiB (19 MiB), 2 iterations, parallelism 1, a 16-byte random salt
and a 32-byte tag, written as a PHC string (``$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>``,
about 97 characters, within ``users.password_hash``'s 256).  These are the OWASP Password Storage
Cheat Sheet's first recommendation at its minimum ("Use Argon2id with a minimum configuration of
19 MiB of memory, an iteration count of 2, and 1 degree of parallelism",
https://cheatsheetseries.owasp.org/cheatsheets/Password_Storage_Cheat_Sheet.html).  Against what
was there before, werkzeug's scrypt (N=2**15, r=8, p=1), this keeps the strength and raises it
by the cheat sheet's own measure, though a hash takes less memory (19 MiB against 32 MiB): the
cheat sheet ranks scrypt second ("if Argon2id is not available") and asks of it N >= 2**17
(128 MiB), four times werkzeug's, so werkzeug's default was under OWASP's floor for scrypt, where
these parameters are on the floor of the algorithm it ranks first.  Argon2id (RFC 9106, the
Password Hashing Competition's winner) is memory-hard, reads memory in a data-independent order
in the first half of its first pass (against side channels) and a data-dependent one after it
(against trading memory for time on GPUs and ASICs).  A check costs some 23 ms of one CPU
here against scrypt's 100-125 ms, which is what lets a shift's rush of sign-ins through
(``bench/signin_rush.py``).

Hashes made before (werkzeug's ``scrypt:...`` and ``pbkdf2:...``) still verify.  A successful
check of one of them, or of an Argon2 hash whose parameters are not the current ones
(argon2-cffi's ``check_needs_rehash``), also returns a current hash of the password, which
sign-in stores (:func:`dashboard.services.accounts.authenticate`): each account moves to the
current scheme at its next sign-in.  A check that fails costs one check of each scheme, whatever
the account's hash (:func:`verify`), so a wrong password for an account still on scrypt takes as
long as for one on Argon2id or for an unknown email.

The bound.  A password hash is the costliest thing a request does.  When a shift starts and
everyone signs in at once, running all of them together only makes each slower and the worker's
memory balloon (ten scrypt hashes at once: peaks of about 410 MiB per worker).  So each worker
runs at most ``MEDPORT_PASSWORD_HASH_CONCURRENCY`` of them at once (default: the number of CPUs
this process may use); the others wait their turn in order, at most
``MEDPORT_PASSWORD_HASH_WAIT_SECONDS``, after which :class:`HashingBusy` says to try again
shortly (the views answer 503 with ``Retry-After``).  The hash's parameters are not changed by
any of this.

Under gunicorn's gevent worker (``threading`` monkey-patched) the wait is on a gevent semaphore,
so a waiting sign-in only parks its greenlet, and the hash runs in gevent's thread pool (argon2's
C code and hashlib's scrypt release the GIL), so the worker's other requests and live streams
keep moving; elsewhere (``flask run``, the CLI, tests) the wait is on a ``threading`` semaphore
and the hash runs in the caller's thread.
"""
import functools
import math
import os
import secrets
import threading
from typing import NamedTuple

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app, has_app_context
from werkzeug.security import check_password_hash as _check_werkzeug_hash
from werkzeug.security import generate_password_hash as _make_werkzeug_hash

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
    """``func(*args)``, a password hash function (:func:`make_hash` or :func:`verify`), run in the
    current app's :class:`HashPool`; returns its result.  Raises :class:`HashingBusy` when no slot
    came free within ``MEDPORT_PASSWORD_HASH_WAIT_SECONDS`` (see the module)."""
    return pool().run(func, *args)


#: Argon2id at the OWASP cheat sheet's minimum (see the module): memory in KiB.
MEMORY_KIB = 19456
#: Passes over the memory.
ITERATIONS = 2
#: Lanes (threads) per hash.
PARALLELISM = 1

#: The current scheme.  ``encoding`` is UTF-8: a password is hashed as its UTF-8 bytes.
HASHER = PasswordHasher(time_cost=ITERATIONS, memory_cost=MEMORY_KIB, parallelism=PARALLELISM,
                        hash_len=32, salt_len=16, encoding="utf-8", type=Type.ID)

#: How every Argon2 PHC string starts (``$argon2id$``, ``$argon2i$``, ``$argon2d$``).
_ARGON2_PREFIX = "$argon2"


class Checked(NamedTuple):
    """What a password check found: ``ok`` whether the password matches, and ``upgrade``, when
    it matches a hash of an older scheme or weaker parameters, a current hash of the same
    password to store in its place (else None)."""

    ok: bool
    upgrade: str | None = None


def make_hash(password):
    """A current hash of ``password`` (str): an ``$argon2id$...`` PHC string.  Runs here and now:
    callers go through :func:`hash_password` (or run it in a :class:`HashPool` slot)."""
    return HASHER.hash(password)


def verify(stored_hash, password):
    """Check ``password`` (str) against ``stored_hash`` (a PHC Argon2 string or a werkzeug
    ``method$salt$hash`` one): a :class:`Checked`.  Runs here and now: callers go through
    :func:`check_password` (or run it in a :class:`HashPool` slot).

    A malformed or unknown hash (``"x"``, an unknown werkzeug method) does not match; nothing is
    raised for it.  When the password matches a werkzeug hash, or an Argon2 one whose parameters
    are not :data:`HASHER`'s (``check_needs_rehash``), ``upgrade`` is a current hash of it, made in
    the same slot, so storing it never waits for a second one.

    A check that fails costs one check of each scheme, whichever the stored hash is (the other
    against a dummy hash of werkzeug's default scrypt or of the current Argon2id): a wrong
    password takes as long for an account still on scrypt as for one on Argon2id or for an
    unknown email, so the time does not tell which accounts exist, nor which have signed in
    since the change of scheme.
    """
    if stored_hash.startswith(_ARGON2_PREFIX):
        try:
            HASHER.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):  # a mismatch, or a hash argon2 cannot read
            _check_werkzeug_hash(_legacy_dummy_hash(), password)
            return Checked(False)
        return Checked(True, make_hash(password) if HASHER.check_needs_rehash(stored_hash) else None)
    try:
        ok = _check_werkzeug_hash(stored_hash, password)
    except ValueError:  # an unknown method or malformed parameters: no password matches it
        ok = False
        _check_werkzeug_hash(_legacy_dummy_hash(), password)
    if ok:
        return Checked(True, make_hash(password))
    _verify_argon2_dummy(password)
    return Checked(False)


@functools.cache
def _legacy_dummy_hash():
    """werkzeug's default hash (scrypt N=2**15, r=8, p=1) of a random password, made once per
    process, here and now: what a failed Argon2 check is also checked against."""
    return _make_werkzeug_hash(secrets.token_urlsafe(24))


@functools.cache
def _argon2_dummy_hash():
    """A current hash of a random password, made once per process, here and now."""
    return make_hash(secrets.token_urlsafe(24))


def _verify_argon2_dummy(password):
    """One Argon2id check of ``password`` against :func:`_argon2_dummy_hash` (never matches)."""
    try:
        HASHER.verify(_argon2_dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        pass


@functools.cache
def _dummy_hash():
    """A current hash of a random password, made once per process (in a slot of the pool)."""
    return run_hash(make_hash, secrets.token_urlsafe(24))


def hash_password(password):
    """A current hash of ``password`` (str), made in the current app's :class:`HashPool`: an
    ``$argon2id$v=19$m=19456,t=2,p=1$...`` string.  Raises :class:`HashingBusy` when no slot came
    free in time."""
    return run_hash(make_hash, password)


def check_password(stored_hash, password):
    """Check ``password`` against ``stored_hash`` in the current app's :class:`HashPool`: a
    :class:`Checked` (see :func:`verify`).  Raises :class:`HashingBusy` when no slot came free in
    time.

    ``stored_hash`` None (no account has the email typed) checks the password against a dummy
    hash of the current scheme and cost, and so (a failed check, :func:`verify`) against one of
    werkzeug's scrypt too, and answers ``Checked(False)``: an unknown email takes as long as a
    wrong password for a known one, so the time does not tell which accounts exist.
    """
    if stored_hash is None:
        run_hash(verify, _dummy_hash(), password)
        return Checked(False)
    return run_hash(verify, stored_hash, password)
