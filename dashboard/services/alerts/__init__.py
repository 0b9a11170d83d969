"""Alerts: what is worth telling each user, written by the relay into the center silo.

Two producers, both in the relay (never a page view):

* :func:`.produce.produce`, a step of every outbox event's delivery (after the center's record), so an
  alert comes from the same transaction as the change it reports and is never lost: a retried
  delivery skips it once written (the center's inbox);
* :func:`.sweep.sweep`, the relay's timer, for what no event marks: bidding about to close with no
  bid, a crew late, a request at risk, an event parked, a silo down.  Each of those is keyed
  by its occasion, so a later sweep (or a second relay) does not repeat it.

Who hears what (kinds by role, :data:`.kinds.KINDS`): an EMS user only of requests its agency may bid
on (level of care and invitation) or serves or bid on; a hospital user only of its hospital's
requests; coordinators and admins of the whole region.  Each user turns each kind on or off
(:func:`.settings.save_settings`); until they do, their organisation's default applies (set by a center
admin), else the kind is on.  An alert carries the request's public reference, level, urgency
and a link, never a patient reference or notes.

The package, by job: :mod:`.kinds` (the kinds and who may hear each), :mod:`.settings` (each
user's and organisation's choices), :mod:`.recipients` (who is told), :mod:`.write` (an alert
written, with its live signal and webhook deliveries), :mod:`.produce` (from outbox events),
:mod:`.sweep` (the relay timer's), :mod:`.inbox` (a user's alerts read and marked, old ones
pruned).
"""
