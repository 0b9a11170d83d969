"""Alerts by email and by webhook: deliveries made from alerts, sent by a sender of their own.

Making: an alert whose user wants its kind by email waits (``Alert.mail_pending``) until the
sender puts it in a message: one message per recipient per minute (:data:`.mail.COALESCE_SECONDS`)
listing every alert that waited, or one an hour for a user who chose the digest
(:data:`.mail.DIGEST_MINUTES`).  An organisation's webhook gets one delivery per alert occasion of a
kind it asked for, made with the alerts themselves (:func:`.webhook_posts.queue_webhooks`), carrying only what
the organisation's users were alerted of.

Sending (:class:`.sender.Sender`, its own thread beside the relay, never a page or the relay itself):
each delivery is claimed for a lease, tried once, and recorded: ``sent``; ``retrying`` with a
growing back-off (:func:`.sender.backoff_seconds`); ``parked`` after ``MEDPORT_DELIVERY_MAX_ATTEMPTS``
tries, listed for the center with a replay button (:func:`.records.replay`).  An SMTP server that cannot
be reached at all (refused, timed out, dropped) is an outage: its emails are retried every
:data:`.sender.UNREACHABLE_RETRY_SECONDS` at most and never parked, so they arrive once it is back.

What a message carries: each alert's title (the request's public reference, level of care,
urgency), its pickup window and a link; never a patient reference or clinical notes (alerts
hold neither).  Webhook bodies are signed per Standard Webhooks (``webhook-id``,
``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``,
secret ``whsec_...``) with the ``standardwebhooks`` package.

The package, by job: :mod:`.records` (the deliveries kept: statuses, a failed try, what the
center lists and replays), :mod:`.mail` (the SMTP server, and emails made from the alerts
waiting), :mod:`.webhook_posts` (webhook deliveries made and posted, signed), :mod:`.sender`
(the loop that tries what is due and records the outcome).
"""
