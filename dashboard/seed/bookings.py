"""Where the demo's units can be: the booking rules the seed keeps so its region is one a real
shift could have made (no unit booked twice for overlapping pickup windows, no bid offered
for a unit already out).

Times are datetimes; ``timing`` is the seed's own ``random.Random``.
"""
from datetime import timedelta


def withdraw_clashing_bids(bid_plans):
    """Mark withdrawn the open requests' bids whose unit is booked (or already bid) elsewhere
    for an overlapping pickup window, as its agency would have; recount those requests' bids.

    Bidding refuses such a unit, and an award of such a bid is refused, so the demo must
    not offer one.  Decided without the random generator: the rest of the region stays
    exactly as the seed makes it.
    """
    taken = {}
    active = ("awarded", "en_route", "at_pickup", "transporting")
    for trip, _plan, _bids, winner in bid_plans:
        if winner is not None and trip.status in active:
            taken.setdefault(winner["unit"].id, []).append((trip.window_start, trip.window_end))
    for trip, _plan, trip_bids, winner in bid_plans:
        if trip.status != "open" or winner is not None or not trip_bids:
            continue
        for bid in trip_bids:
            windows = taken.setdefault(bid["unit"].id, [])
            if any(start < trip.window_end and trip.window_start < end for start, end in windows):
                bid["withdrawn"] = True
            else:
                windows.append((trip.window_start, trip.window_end))
        live = [bid["eta"] for bid in trip_bids if not bid.get("withdrawn")]
        trip.bid_count, trip.best_eta_minutes = len(live), min(live, default=None)


#: Trip statuses in which a unit is booked for the trip's window (``trips.check_unit_free``).
BOOKED = ("awarded", "en_route", "at_pickup", "transporting")


def settle(trip, status, last, now, timing):
    """How far to move a progressed trip's times so its story fits ``now``: a trip still running
    took its last step a few minutes ago; a finished one is never finished later than now."""
    if status in BOOKED:
        return now - timedelta(minutes=timing.randint(2, 15)) - last
    return min(timedelta(0), now - timedelta(minutes=timing.randint(1, 10)) - last)


def place_window(trip, status, stamps, now, timing):
    """Move a running trip's pickup window (moved with its times) to where its crew is: ahead
    while awarded, opening soon after the crew left, around the time it reached the pickup."""
    if status == "awarded" and trip.window_start <= now + timedelta(minutes=5):
        start = now + timedelta(minutes=timing.randint(15, 60))
    elif status == "en_route":
        start = stamps["en_route"] + timedelta(minutes=timing.randint(10, 30))
    elif status in ("at_pickup", "transporting"):
        start = stamps["at_pickup"] - timedelta(minutes=timing.randint(0, 20))
    else:
        return
    trip.window_start, trip.window_end = start, start + timedelta(minutes=60)


def overlaps(spans, start, end):
    """Whether [start, end) meets any (start, end) span of ``spans`` (datetimes)."""
    return any(s < end and start < e for s, e in spans)


def free_bid(trip_bids, trip, status, out, bookings, engaged):
    """The fastest bid whose unit a real shift could give this trip: not booked for an
    overlapping window while the trip is booked, not out on another trip meanwhile; or None."""
    for bid in trip_bids:
        unit_id = bid["unit"].id
        if status in BOOKED and overlaps(bookings.get(unit_id, ()), trip.window_start, trip.window_end):
            continue
        if out is not None and overlaps(engaged.get(unit_id, ()), *out):
            continue
        return bid
    return None
