"""Alert kinds: what each role group may be told, and the setting that is not a kind (the digest)."""
from ...models.vocabulary import CENTER_ROLES

#: role group -> [(kind, label)]; coordinators and admins share the ``center`` group.
KINDS = {
    "ems": [
        ("ems.new_request", "A new request my agency may bid on"),
        ("ems.bid_awarded", "Our bid awarded (or a unit of ours assigned by the center)"),
        ("ems.bid_not_awarded", "Our bid not awarded"),
        ("ems.trip_changed", "A request we serve changed or cancelled"),
    ],
    "hospital": [
        ("hospital.first_bid", "First bid on a request"),
        ("hospital.closing_no_bid", "Bidding closing with no bid"),
        ("hospital.center_award", "Award made by the transport center"),
        ("hospital.crew_en_route", "Crew en route"),
        ("hospital.crew_at_pickup", "Crew at pickup"),
        ("hospital.crew_late", "Crew late"),
        ("hospital.unfilled", "Request unfilled"),
    ],
    "center": [
        ("center.unfilled", "Request unfilled"),
        ("center.at_risk", "Request at risk"),
        ("center.parked", "Event parked (the relay gave up retrying it)"),
        ("center.silo_down", "Silo down"),
    ],
}
KIND_LABELS = {kind: label for kinds in KINDS.values() for kind, label in kinds}
ALL_KINDS = tuple(KIND_LABELS)
#: The kind whose alerts an EMS user may narrow by level of care and urgency.
NEW_REQUEST = "ems.new_request"
#: Not a kind of alert: the setting "alert emails as an hourly digest".
DIGEST = "mail.digest"


def group_of(role):
    """The kinds' group of a role: ``ems``, ``hospital`` or ``center``."""
    return "center" if role in CENTER_ROLES else role


def kinds_for(role):
    """``[(kind, label)]`` a user of ``role`` may receive."""
    return KINDS[group_of(role)]
