"""gunicorn settings: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Live pages hold one Server-Sent Events stream each, open for as long as the
page is.  gevent workers hold thousands of such idle connections cheaply (a
greenlet each); thread workers would be used up by them.  psycopg2 is made
cooperative (psycogreen) so a query waits without blocking the other
greenlets of its worker.  gunicorn's gevent worker monkey-patches the
standard library when the worker starts, before the app (and the threads of
its relay and signal listener) is imported.

Command-line options override what is set here (``-w``, ``-b``, ``-k``).
"""
import os

bind = [f"0.0.0.0:{os.environ['PORT']}"] if os.environ.get("PORT") else ["127.0.0.1:8000"]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gevent"
# Open connections per worker, streams included.
worker_connections = int(os.environ.get("MEDPORT_WORKER_CONNECTIONS", "2000"))

# With gevent, ``timeout`` is how long a worker may stop answering the arbiter's
# heartbeat (a blocked event loop), not a limit on a request: streams last long.
timeout = 30
# On restart, open streams get this long to end; browsers then reconnect to the new
# workers with Last-Event-ID and miss nothing.
graceful_timeout = 10
# An idle keep-alive connection costs a gevent worker one greenlet.  Keep it open longer
# than a user's pause between requests (and a proxy's idle upstream timeout): a server
# closing a connection just as the client reuses it makes that request fail with a reset.
keepalive = int(os.environ.get("MEDPORT_KEEPALIVE_SECONDS", "75"))

# gunicorn's control socket sits at one path per user: several servers on a host would
# share it.  Give each its own path to use ``gunicornc``.
if os.environ.get("MEDPORT_CONTROL_SOCKET"):
    control_socket = os.environ["MEDPORT_CONTROL_SOCKET"]
else:
    control_socket_disable = True

accesslog = os.environ.get("MEDPORT_ACCESS_LOG", "-") or None
# The path without its query string, and no Referer: a query (a search by patient reference,
# say) may name a patient, and logs must not.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms "%(a)s"'
errorlog = "-"
loglevel = os.environ.get("MEDPORT_LOG_LEVEL", "info")
# Behind a proxy that terminates TLS, gunicorn trusts its X-Forwarded-* headers only
# from these addresses (the app's own MEDPORT_PROXY_HOPS applies ProxyFix).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def post_fork(server, worker):
    """Make psycopg2 cooperative in each gevent worker before the app connects anywhere."""
    if "gevent" in server.cfg.worker_class_str:
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()


def post_worker_init(worker):
    """Tune the worker's garbage collector now that the app is loaded (dashboard/gc_tuning.py;
    a wrong ``MEDPORT_GC_THRESHOLD`` stops the worker, so the server does not start).
    On a graceful stop, end the worker's live streams at once instead of after
    ``graceful_timeout``: the browsers reconnect to the other workers and replay."""
    import signal

    from dashboard.events.hub import hub
    from dashboard.gc_tuning import threshold_from, tune

    tune(threshold_from())

    stop = worker.handle_exit

    def handle_exit(sig, frame):
        hub.close()
        stop(sig, frame)

    signal.signal(signal.SIGTERM, handle_exit)


def worker_exit(server, worker):
    """Let a worker's in-process relay finish its pass before the worker goes."""
    from dashboard.events.relay import stop_inprocess_relay

    stop_inprocess_relay(timeout=5)
