"""Demo data: a realistic small region (central Pennsylvania) with trips in every state.

Each silo is written and committed on its own, as the silo rule asks; ids
cross silos as plain integers.  Deterministic: the same seed gives the same region.
"""
import random
from datetime import datetime, time, timedelta
from functools import lru_cache

import sqlalchemy as sa

from .. import hashing
from ..extensions import db
from ..localtime import from_local, local_today
from ..models.base import utcnow
from ..models.center import Agency, Hospital, User
from ..models.ems import EmsAgency, EmsRoute, TransportBid, Unit, UnitAvailability
from ..models.hospital import (
    HospitalAgencyPreference,
    HospitalFacility,
    HospitalUser,
    TransportRequest,
    TransportRequestEvent,
)
from ..models.vocabulary import LEVEL_RANK, trip_dispatch_state
from ..services import audit, care_rules, configuration
from ..services.accounts import DEMO_PASSWORD
from ..services.geo import distance_km
from .bookings import free_bid, place_window, settle, withdraw_clashing_bids
from .region import (
    AGENCIES,
    DEMO_OVERRIDE_REASON,
    HOSPITALS,
    OTHER_NEEDS,
    PICKUP_LOCATIONS,
    PREFERENCES,
)


@lru_cache(maxsize=1)
def _demo_password_hash():
    """Every demo user shares the demo password; hash it once per process (a current hash,
    :func:`dashboard.hashing.hash_password`)."""
    return hashing.hash_password(DEMO_PASSWORD)


def is_seeded():
    """Whether the center silo has any user (the demo, or a real deployment, is there)."""
    return db.session.scalar(sa.select(sa.func.count(User.id))) > 0


def seed(now=None, trips_per_day=10, days=4, rng_seed=2026):
    """Create the demo region: six hospitals, six agencies, their units and users, and
    ``trips_per_day`` trips posted on each of the last ``days`` days up to ``now`` (naive UTC, default
    the clock), in every state; the same ``rng_seed`` gives the same region.

    Each silo is committed on its own.  Returns counts: ``hospitals``, ``agencies``, ``units``,
    ``users``, ``trips``, ``bids``, ``by_status`` (trips per status) and ``mean_leg_km`` (the
    trips' mean straight-line distance in km, or None).  Raises RuntimeError
    when the center silo already has users (the demo is seeded once).
    """
    if is_seeded():
        raise RuntimeError("The center silo already has users; the demo is seeded once.")
    now = now or utcnow()
    rng = random.Random(rng_seed)
    timing = random.Random(rng_seed + 1)  # today's trips set around now, apart from the region's draw
    password_hash = _demo_password_hash()

    # --- center: registry, users, configuration ---------------------------------------
    hospitals, agencies = {}, {}
    for name, code, _slug, city, _coords, _extra in HOSPITALS:
        hospitals[code] = Hospital(name=name, short_code=code, city=city, region="Central PA",
                                   phone="814-555-0" + str(100 + len(hospitals)))
    for name, code, _slug, levels, (lat, lon), area, _units in AGENCIES:
        agencies[code] = Agency(name=name, short_code=code, levels=levels, service_area=area,
                                base_lat=lat, base_lon=lon, service_radius_km=90,
                                phone="814-555-0" + str(200 + len(agencies)))
    db.session.add_all(list(hospitals.values()) + list(agencies.values()))
    db.session.flush()
    users = [
        User(email="coordinator@medport.test", display_name="Casey Coordinator", role="coordinator"),
        User(email="admin@medport.test", display_name="Avery Admin", role="admin"),
    ]
    hospital_users = []
    for _name, code, slug, *_ in HOSPITALS:
        # Altoona's charge nurse and dispatcher are their organisations' administrators.
        user = User(email=f"nurse@{slug}.medport.test", display_name=f"Charge Nurse ({code})",
                    role="hospital", hospital_id=hospitals[code].id, org_admin=slug == "altoona")
        users.append(user)
        hospital_users.append((user, code))
    for _name, code, slug, *_ in AGENCIES:
        users.append(User(email=f"dispatch@{slug}.medport.test", display_name=f"Dispatcher ({code})",
                          role="ems", agency_id=agencies[code].id, org_admin=slug == "altoonaems"))
    # Crew members who sign in on a phone and pick the unit they staff (/crew/).
    for code, slug, name in (("AEMS", "altoonaems", "Riley Medic"), ("AEMS", "altoonaems", "Jordan EMT"),
                             ("BCA", "blaircounty", "Sam EMT")):
        email = f"crew@{slug}.medport.test" if name != "Jordan EMT" else f"crew2@{slug}.medport.test"
        users.append(User(email=email, display_name=name, role="crew", agency_id=agencies[code].id))
    for user in users:
        user.password_hash = password_hash
    db.session.add_all(users)
    for key, value in configuration.defaults().items():
        configuration.set_value(key, value, user_id=None)
    db.session.commit()
    hospital_ids = {code: h.id for code, h in hospitals.items()}
    agency_ids = {code: a.id for code, a in agencies.items()}
    agency_names = {code: a.name for code, a in agencies.items()}
    hospital_user_rows = [(u.id, u.display_name, code) for u, code in hospital_users]

    # --- hospital: facilities, staff, preferences ---------------------------------------
    facilities = {}
    for name, code, _slug, city, (lat, lon), extra in HOSPITALS:
        rows = [HospitalFacility(hospital_id=hospital_ids[code], name=name, kind="hospital",
                                 address=f"1 Medical Center Drive, {city}, PA", city=city, lat=lat, lon=lon)]
        for fname, kind, fcity, flat, flon in extra:
            rows.append(HospitalFacility(hospital_id=hospital_ids[code], name=fname, kind=kind,
                                         address=f"{fcity}, PA", city=fcity, lat=flat, lon=flon))
        facilities[code] = rows
        db.session.add_all(rows)
    db.session.flush()
    for user_id, display_name, code in hospital_user_rows:
        db.session.add(HospitalUser(user_id=user_id, hospital_id=hospital_ids[code],
                                    display_name=display_name, job_title="Charge nurse",
                                    default_facility_id=facilities[code][0].id))
    for code, preferred in PREFERENCES.items():
        for rank, agency_code in enumerate(preferred, start=1):
            db.session.add(HospitalAgencyPreference(hospital_id=hospital_ids[code],
                                                    agency_id=agency_ids[agency_code], rank=rank,
                                                    notes="Regular partner" if rank == 1 else ""))
    db.session.commit()

    # --- ems: agencies' profiles, units, availability ----------------------------------
    units_by_agency = {}
    for name, code, _slug, levels, (lat, lon), area, unit_specs in AGENCIES:
        db.session.add(EmsAgency(agency_id=agency_ids[code], name=name, levels=levels,
                                 dispatch_phone="814-555-0" + str(300 + len(units_by_agency)),
                                 base_lat=lat, base_lon=lon, service_radius_km=90))
        units = []
        for number, level in unit_specs:
            unit = Unit(agency_id=agency_ids[code], number=number, level=level,
                        base_station=f"{area.split(' ')[0]} Station", status="available",
                        shift_start=time(7, 0), shift_end=time(19, 0), lat=lat, lon=lon)
            units.append(unit)
        db.session.add_all(units)
        units_by_agency[code] = units
    db.session.flush()
    # Shifts of the region's today and tomorrow, 07:00-19:00 local time with a break at noon
    # (the region's day, not UTC's: the availability page shows local days).
    today = local_today(now)
    for units in units_by_agency.values():
        for unit in units:
            for offset in (0, 1):
                day = today + timedelta(days=offset)
                db.session.add(UnitAvailability(unit_id=unit.id, kind="on_shift",
                                                starts_at=from_local(datetime.combine(day, time(7, 0))),
                                                ends_at=from_local(datetime.combine(day, time(19, 0)))))
            db.session.add(UnitAvailability(unit_id=unit.id, kind="on_break",
                                            starts_at=from_local(datetime.combine(today, time(12, 0))),
                                            ends_at=from_local(datetime.combine(today, time(12, 30)))))
    db.session.commit()

    # --- trips across the last days, and the bids/routes that go with them --------------
    all_facilities = [f for rows in facilities.values() for f in rows]
    trip_plans = []
    statuses_recent = ["open", "open", "awarded", "en_route", "at_pickup", "transporting"]
    counter = {}
    for day_offset in range(days - 1, -1, -1):
        for i in range(trips_per_day):
            code = rng.choice(list(hospital_ids))
            origin = facilities[code][0] if rng.random() < 0.8 else rng.choice(facilities[code])
            destination = rng.choice([f for f in all_facilities if f.id != origin.id])
            level = rng.choices(["BLS", "ALS", "CCT"], weights=[6, 3, 1])[0]
            urgency = rng.choices(["routine", "urgent", "emergent"], weights=[7, 2, 1])[0]
            if day_offset == 0:
                created = now - timedelta(minutes=rng.randint(2, 240))
                status = statuses_recent[i % len(statuses_recent)] if i < 8 else rng.choice(["completed", "cancelled"])
            else:
                created = now - timedelta(days=day_offset, minutes=rng.randint(0, 600))
                status = rng.choices(["completed", "cancelled"], weights=[8, 2])[0]
            window_start = created + timedelta(minutes=rng.choice([30, 45, 60, 90, 120]))
            counter[code] = counter.get(code, 0) + 1
            trip_plans.append(dict(code=code, origin=origin, destination=destination, level=level,
                                   urgency=urgency, created=created, status=status,
                                   window_start=window_start,
                                   reference=f"{code}-{created:%y%m%d}-{counter[code]:03d}"))

    trips = []
    for plan in trip_plans:
        created = plan["created"]
        trip = TransportRequest(
            reference=plan["reference"], hospital_id=hospital_ids[plan["code"]], status="open",
            origin_facility_id=plan["origin"].id, pickup_location=rng.choice(PICKUP_LOCATIONS),
            destination_facility_id=plan["destination"].id, level_of_care=plan["level"],
            mobility=rng.choice(["stretcher", "stretcher", "wheelchair", "ambulatory", "bariatric_stretcher"]),
            urgency=plan["urgency"], window_start=plan["window_start"],
            window_end=plan["window_start"] + timedelta(minutes=60),
            patient_ref="P-" + "".join(rng.choice("ACDEFHJKMNPRTUVWXY3479") for _ in range(6)),
            age_group=rng.choice(["adult", "adult", "older_adult", "older_adult", "adolescent", "child"]),
            weight_kg=rng.randint(40, 140), isolation=rng.choice(["none"] * 5 + ["contact", "droplet"]),
            oxygen_lpm=rng.choice([0, 0, 0, 2, 4]), cardiac_monitor=plan["level"] != "BLS",
            # An IV pump needs ALS (services/care_rules.py): a BLS trip draws alike and has none.
            iv_pump=plan["level"] == "CCT" or (rng.random() < 0.2 and plan["level"] == "ALS"),
            ventilator=plan["level"] == "CCT" and rng.random() < 0.5,
            other_needs=rng.choice(OTHER_NEEDS), bid_deadline=created + timedelta(minutes=30),
            invite_mode=rng.choice(["all", "all", "preferred", "preferred_then_all"]),
            invite_all_after_minutes=10,
            invited_agency_ids="," + ",".join(str(agency_ids[c]) for c in PREFERENCES[plan["code"]]) + ",",
            created_by_user_id=1, created_at=created, updated_at=created,
        )
        if trip.invite_mode != "preferred_then_all":
            trip.invite_all_after_minutes = None
        db.session.add(trip)
        trips.append((trip, plan))
    db.session.flush()
    # One open BLS request goes with a cardiac monitor: above its level, overridden with a reason
    # (every other demo request's level covers its needs).
    overridden = next((trip for trip, plan in trips if plan["level"] == "BLS" and plan["status"] == "open"), None)
    if overridden is not None:
        overridden.cardiac_monitor = True
        overridden.care_override_needs = ",".join(rule.need for rule in care_rules.shortfalls("BLS", overridden))
        overridden.care_override_reason = DEMO_OVERRIDE_REASON

    # Bids are decided in memory first, so each silo is written once.
    bid_plans = []
    history = []
    progression = ["awarded", "en_route", "at_pickup", "transporting", "completed"]
    bookings, engaged = {}, {}  # unit id -> windows of its active trips; times it was out on one
    for trip, plan in trips:
        created = plan["created"]
        posted = TransportRequestEvent(trip_id=trip.id, action="posted", to_status="open",
                                       at=created, user_id=trip.created_by_user_id,
                                       user_label="Charge Nurse (" + plan["code"] + ")")
        history.append(posted)
        if trip is overridden:
            history.append(TransportRequestEvent(
                trip_id=trip.id, action="care_override", from_status="open", to_status="open", at=created,
                user_id=trip.created_by_user_id, user_label=posted.user_label,
                note=f"Level of care override: {care_rules.override_summary(trip)}. Reason: {DEMO_OVERRIDE_REASON}",
                detail={"level_of_care": "BLS", "needs": trip.care_override_needs.split(","),
                        "reason": DEMO_OVERRIDE_REASON}))
        capable = [spec[1] for spec in AGENCIES
                   if any(LEVEL_RANK[u.level] >= LEVEL_RANK[plan["level"]] for u in units_by_agency[spec[1]])]
        recent_open = plan["status"] == "open" and rng.random() < 0.4
        n_bids = 0 if recent_open else min(len(capable), rng.randint(2, 4))
        bidders = rng.sample(capable, n_bids)
        trip_bids = []
        for code in bidders:
            unit = rng.choice([u for u in units_by_agency[code] if LEVEL_RANK[u.level] >= LEVEL_RANK[plan["level"]]])
            # Posted at least 2 minutes ago: a bid is never later than now.
            bid_at = min(created + timedelta(minutes=rng.randint(1, 20)), now - timedelta(seconds=30))
            trip_bids.append(dict(code=code, unit=unit, eta=rng.randint(8, 75), at=bid_at,
                                  note=rng.choice(["", "", "Crew finishing a call nearby", "Can take oxygen"])))
        trip_bids.sort(key=lambda b: b["eta"])
        if trip_bids:
            trip.bid_count = len(trip_bids)
            trip.best_eta_minutes = trip_bids[0]["eta"]
            trip.first_bid_at = min(b["at"] for b in trip_bids)
        winner = None
        if plan["status"] in progression and trip_bids:
            awarded_at = max(b["at"] for b in trip_bids) + timedelta(minutes=2)
            stamps, at = [], awarded_at
            for step in progression[1:progression.index(plan["status"]) + 1]:
                at = at + timedelta(minutes=rng.randint(5, 35))
                stamps.append((step, at))
            shift = settle(trip, plan["status"], stamps[-1][1] if stamps else awarded_at, now, timing)
            created, awarded_at = created + shift, awarded_at + shift
            stamps = [(step, at + shift) for step, at in stamps]
            posted.at = trip.created_at = created
            trip.window_start, trip.window_end = trip.window_start + shift, trip.window_end + shift
            trip.bid_deadline = created + timedelta(minutes=30)
            for bid in trip_bids:
                bid["at"] += shift
            trip.first_bid_at = min(b["at"] for b in trip_bids)
            place_window(trip, plan["status"], dict(stamps), now, timing)
            out = (stamps[0][1], stamps[-1][1] if plan["status"] == "completed" else now) if stamps else None
            winner = free_bid(trip_bids, trip, plan["status"], out, bookings, engaged)
        if winner is not None:
            unit_id = winner["unit"].id
            if plan["status"] != "completed":
                bookings.setdefault(unit_id, []).append((trip.window_start, trip.window_end))
            if out is not None:
                engaged.setdefault(unit_id, []).append(out)
            trip.status = "awarded"
            trip.awarded_agency_id = agency_ids[winner["code"]]
            trip.awarded_agency_name = agency_names[winner["code"]]
            trip.awarded_unit_id = winner["unit"].id
            trip.awarded_unit_label = winner["unit"].label
            trip.awarded_eta_minutes = winner["eta"]
            trip.awarded_bid_id = None  # set once the EMS silo has the bid
            trip.awarded_at = awarded_at
            trip.award_source = "hospital"
            history.append(TransportRequestEvent(trip_id=trip.id, action="awarded", from_status="open",
                                                 to_status="awarded", at=awarded_at, user_id=1,
                                                 user_label="Charge Nurse (" + plan["code"] + ")",
                                                 note=f"{agency_names[winner['code']]}, {winner['unit'].label}, ETA {winner['eta']} min"))
            at, previous = awarded_at, "awarded"
            for step, at in stamps:
                setattr(trip, f"{step}_at", at)
                trip.status = step
                history.append(TransportRequestEvent(trip_id=trip.id, action=step, from_status=previous,
                                                     to_status=step, at=at,
                                                     user_label=f"{winner['unit'].number}, {agency_names[winner['code']]}"))
                previous = step
            trip.updated_at = at
        elif plan["status"] in progression or plan["status"] == "cancelled":
            # A request no free unit could take is cancelled too, drawn from ``timing`` so the
            # rest of the region is drawn as before.  Never later than now.
            draw = rng if plan["status"] == "cancelled" or not trip_bids else timing
            cancel_at = min(created + timedelta(minutes=draw.randint(20, 50)), now - timedelta(seconds=20))
            trip.status = "cancelled"
            trip.cancel_reason = draw.choice(["no_availability", "patient_not_stable", "not_needed"])
            trip.cancelled_at = cancel_at
            trip.updated_at = cancel_at
            history.append(TransportRequestEvent(trip_id=trip.id, action="cancelled", from_status="open",
                                                 to_status="cancelled", at=cancel_at, user_id=1,
                                                 user_label="Charge Nurse (" + plan["code"] + ")"))
        elif plan["status"] == "open" and trip_bids and created + timedelta(minutes=30) < now:
            rng.randint(5, 30)  # a draw the region has always made here: the rest is drawn alike
        bid_plans.append((trip, plan, trip_bids, winner))
    withdraw_clashing_bids(bid_plans)
    for trip, _plan, _bids, _winner in bid_plans:
        # Past its deadline, by the one rule: awaiting award with a live bid, else unfilled.
        state = trip_dispatch_state(trip, now)
        if state == "awaiting_award":
            history.append(TransportRequestEvent(
                trip_id=trip.id, action="awaiting_award", from_status="open", to_status="open",
                at=trip.bid_deadline, user_label="MedPort",
                note=f"Bidding closed with {trip.bid_count} live bid{'s' if trip.bid_count != 1 else ''}: award one"))
        elif state == "unfilled":
            trip.unfilled_at = trip.bid_deadline
            history.append(TransportRequestEvent(
                trip_id=trip.id, action="unfilled", from_status="open", to_status="open",
                at=trip.bid_deadline, user_label="MedPort", note="Bidding deadline passed unfilled"))
    db.session.add_all(history)
    summary = {"trips": len(trips), "by_status": {}}
    for trip, *_ in trips:
        summary["by_status"][trip.status] = summary["by_status"].get(trip.status, 0) + 1
    trip_facts = {trip.id: dict(status=trip.status, hospital_id=trip.hospital_id, reference=trip.reference,
                                window_start=trip.window_start, window_end=trip.window_end,
                                origin=trip.origin, destination=trip.destination,
                                pickup=trip.pickup_location, completed_at=trip.completed_at,
                                cancelled=trip.status == "cancelled", public_id=trip.public_id)
                  for trip, *_ in trips}
    told = [(trip_facts[e.trip_id], e.action, e.at, e.user_id, e.from_status, e.to_status) for e in history]
    db.session.commit()

    # --- ems: bids and routes ----------------------------------------------------------
    position = {}
    n_bids = 0
    for trip, _plan, trip_bids, winner in bid_plans:
        facts = trip_facts[trip.id]
        for bid in trip_bids:
            if winner is bid:
                status = "accepted"
            elif winner is not None:
                status = "declined"
            elif bid.get("withdrawn"):
                status = "withdrawn"
            elif facts["cancelled"]:
                status = "closed"
            else:
                status = "live"
            bid["row"] = TransportBid(trip_id=trip.id, hospital_id=facts["hospital_id"],
                                        agency_id=agency_ids[bid["code"]], unit_id=bid["unit"].id,
                                        eta_minutes=bid["eta"], note=bid["note"], status=status,
                                        window_start=facts["window_start"], window_end=facts["window_end"],
                                        created_at=bid["at"], updated_at=bid["at"],
                                        decided_at=None if status == "live"
                                        else min(bid["at"] + timedelta(minutes=5), now))
            db.session.add(bid["row"])
            n_bids += 1
        if winner is not None:
            unit = winner["unit"]
            day = facts["window_start"].date()
            key = (unit.id, day)
            position[key] = position.get(key, 0) + 1
            done = facts["status"] == "completed"
            origin, destination = facts["origin"], facts["destination"]
            db.session.add(EmsRoute(unit_id=unit.id, agency_id=unit.agency_id, trip_id=trip.id,
                                    trip_reference=facts["reference"], service_date=day,
                                    position=position[key],
                                    pickup_label=f"{origin.name}, {facts['pickup']}",
                                    dropoff_label=destination.name if destination else "",
                                    pickup_lat=origin.lat, pickup_lon=origin.lon,
                                    dropoff_lat=destination.lat if destination else None,
                                    dropoff_lon=destination.lon if destination else None,
                                    window_start=facts["window_start"], window_end=facts["window_end"],
                                    status=facts["status"] if facts["status"] != "awarded" else "planned",
                                    **EmsRoute.crew_facts_of(trip)))
            if not done:  # its current trip: the active one of the earliest window
                unit.status = "assigned"
                current = trip_facts.get(unit.current_trip_id)
                if current is None or facts["window_start"] < current["window_start"]:
                    unit.current_trip_id = trip.id
    db.session.flush()
    placed = [(trip_facts[trip.id], bid["row"].id, bid["row"].public_id, bid["at"], agency_ids[bid["code"]],
               bid["unit"].id, bid["eta"]) for trip, _plan, trip_bids, _winner in bid_plans for bid in trip_bids]
    won = {trip.id: winner["row"].id for trip, _plan, _bids, winner in bid_plans if winner is not None}
    db.session.commit()

    # --- hospital: which bid each award took ------------------------------------------
    for trip_id, bid_id in won.items():
        db.session.execute(sa.update(TransportRequest).where(TransportRequest.id == trip_id)
                           .values(awarded_bid_id=bid_id).execution_options(synchronize_session=False))
    db.session.commit()

    # --- center: the audit log tells the region's story, each entry at its time -----------
    _audit_history(told, placed)
    db.session.commit()
    summary.update(hospitals=len(hospitals), agencies=len(agencies), users=len(users), bids=n_bids,
                   units=sum(len(u) for u in units_by_agency.values()),
                   mean_leg_km=_mean_leg(trip_plans))
    return summary


#: The event each kind of history line stands for (as the relay records it).
AUDITED_ACTIONS = {"posted": "trip.posted", "awarded": "trip.awarded", "cancelled": "trip.cancelled",
                   "unfilled": "trip.unfilled", "awaiting_award": "trip.awaiting_award",
                   "care_override": "trip.care_override",
                   **{step: "trip.status_changed" for step in ("en_route", "at_pickup", "transporting",
                                                               "completed")}}


def _audit_history(told, placed):
    """Audit entries for the demo's history, as the relay would have written them: each trip's
    posting, award, steps, cancellation or deadline, and each bid, at its own time.

    ``told``: (trip facts, action, at, user id, from status, to status) per history line;
    ``placed``: (trip facts, bid id, bid public id, at, agency id, unit id, ETA) per bid.
    Operational facts only, no patient data."""
    for facts, action, at, user_id, from_status, to_status in told:
        audit.record(AUDITED_ACTIONS[action], user_id=user_id, entity_type="trip",
                     entity_id=facts["public_id"], silo="hospital", created_at=at,
                     after={"public_id": facts["public_id"], "reference": facts["reference"],
                            "hospital_id": facts["hospital_id"], "status": to_status,
                            "previous_status": from_status})
    for facts, bid_id, public_id, at, agency_id, unit_id, eta in placed:
        audit.record("bid.placed", entity_type="bid", entity_id=public_id, silo="ems", created_at=at,
                     after={"bid_id": bid_id, "public_id": facts["public_id"], "agency_id": agency_id,
                            "unit_id": unit_id, "eta_minutes": eta})


def _mean_leg(plans):
    legs = [distance_km(p["origin"].lat, p["origin"].lon, p["destination"].lat, p["destination"].lon)
            for p in plans]
    legs = [leg for leg in legs if leg is not None]
    return round(sum(legs) / len(legs), 1) if legs else None


