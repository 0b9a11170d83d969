"""``flask medport ...``: silo checks, demo data, accounts, analytics rollups, the relay, alert tones."""
import os
import sys
import time

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import with_appcontext

from .config import SILOS
from .events.outbox import SYSTEM, emit
from .events.relay import Relay
from .events.relay import retry_parked as requeue
from .extensions import db
from .models.center import Agency, Hospital
from .seed import demo, scale
from .services import accounts, audit
from .services.analytics.stored import roll_up
from .services.deliveries.sender import Sender, start_sender_thread
from .services.silos import check_all, describe_url, record_report
from .tones import write_all


@click.group()
def medport():
    """MedPort operations."""


@medport.command("check")
@with_appcontext
def check_command():
    """Check each silo: connection, expected tables, write/read/delete round trip."""
    report = check_all(full=True)
    failed = False
    for silo in SILOS:
        where = describe_url(silo)
        click.echo(f"{silo} ({where['dialect']} {where['host'] or 'local'}/{where['database']})")
        for name in ("connection", "tables", "round_trip"):
            result = report[silo]["checks"].get(name)
            if result is None:
                click.echo(f"  {name:<11} SKIPPED (no connection)")
                failed = True
            elif result["ok"]:
                click.echo(f"  {name:<11} ok    {result['ms']:8.2f} ms")
            else:
                click.echo(f"  {name:<11} FAILED  {result['error']}")
                failed = True
    recorded = record_report(report)
    click.echo("service registry updated" if recorded else "service registry not updated (center silo not reachable or not migrated)")
    if failed:
        click.echo("some checks failed", err=True)
        sys.exit(1)
    click.echo("all 9 checks passed")


@medport.command("seed-demo")
@click.option("--if-empty", is_flag=True, help="Do nothing when users already exist.")
@with_appcontext
def seed_demo_command(if_empty):
    """Create the demo region: hospitals, agencies, units, users and a few days of trips."""
    if demo.is_seeded():
        if if_empty:
            click.echo("demo data already present")
            return
        raise click.ClickException("The center silo already has users; refusing to seed twice.")
    summary = demo.seed()
    click.echo(
        f"seeded {summary['hospitals']} hospitals, {summary['agencies']} agencies, "
        f"{summary['units']} units, {summary['users']} users, {summary['trips']} trips, "
        f"{summary['bids']} bids"
    )
    click.echo("demo logins use the password " + demo.DEMO_PASSWORD)


@medport.command("create-user")
@click.option("--email", required=True)
@click.option("--name", "display_name", required=True)
@click.option("--role", type=click.Choice(["hospital", "ems", "crew", "coordinator", "admin"]), required=True)
@click.option("--hospital", "hospital_code", help="Hospital short code (hospital role).")
@click.option("--agency", "agency_code", help="Agency short code (ems role).")
@click.password_option()
@with_appcontext
def create_user_command(email, display_name, role, hospital_code, agency_code, password):
    """Create a real account (for a PostgreSQL deployment)."""
    hospital_id = agency_id = None
    if hospital_code:
        hospital = db.session.scalar(sa.select(Hospital).where(Hospital.short_code == hospital_code))
        if hospital is None:
            raise click.ClickException(f"No hospital with code {hospital_code}.")
        hospital_id = hospital.id
    if agency_code:
        agency = db.session.scalar(sa.select(Agency).where(Agency.short_code == agency_code))
        if agency is None:
            raise click.ClickException(f"No agency with code {agency_code}.")
        agency_id = agency.id
    problem = accounts.validate_password(password)
    if problem:
        raise click.ClickException(problem)
    try:
        user = accounts.create_user(email, display_name, role, password, hospital_id, agency_id)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    emit("center", "user.created", "user", user.public_id, accounts.user_event_payload(user), actor=SYSTEM)
    audit.record("user.created", user_id=None, user_email="cli", entity_type="user",
                 entity_id=user.public_id, after=accounts.user_event_payload(user))
    db.session.commit()
    click.echo(f"created {role} user {user.email}")


@medport.command("seed-scale")
@click.option("--trips", type=click.IntRange(1, 10_000_000), required=True, help="How many trips to add.")
@click.option("--years", type=click.FloatRange(0.01, 20), default=2.0, show_default=True,
              help="How far back the history reaches.")
@click.option("--live", type=click.IntRange(0, 10_000_000), default=None,
              help="Exactly this many trips posted in the last 4 hours (default: about 0.2 %).")
@click.option("--rollup/--no-rollup", default=True, show_default=True,
              help="Store the analytics cells of the closed days afterwards (as flask medport rollup).")
@click.option("--existing-region", is_flag=True,
              help="Closed history only, over the hospitals, facilities, agencies and units already "
                   "registered: no organisation or unit added, nothing live, nothing in the last 30 hours "
                   "nor on or after the day before the oldest request still running.")
@with_appcontext
def seed_scale_command(trips, years, live, rollup, existing_region):
    """Fill the three silos with a region's years of history (2-5 bids per trip), fast.

    Without ``--existing-region`` a generated region (30 hospitals, 40 agencies, 320 units)
    comes with the history; with it the history is the existing region's.
    """
    if existing_region and live:
        raise click.UsageError("--existing-region adds closed history only: --live must be 0 or left out.")
    started = time.perf_counter()
    with click.progressbar(length=trips, label="trips") as bar:
        try:
            counts = scale.generate(trips, years=years, progress=bar.update, live=live,
                                    existing_region=existing_region)
        except scale.RegionMissing as exc:
            raise click.ClickException(str(exc)) from exc
    elapsed = time.perf_counter() - started
    click.echo(
        f"added {counts['trips']} trips, {counts['bids']} bids, {counts['history']} history rows, "
        f"{counts['routes']} routes in {elapsed:.1f} s"
    )
    if rollup:
        started = time.perf_counter()
        stored = roll_up(days_back=int(years * 366) + 1)
        click.echo(f"stored the analytics cells of {stored} closed days in {time.perf_counter() - started:.1f} s")


@medport.command("rollup")
@click.option("--days", type=click.IntRange(1, 4000), default=400, show_default=True,
              help="How many past local days to look at (today is never stored).")
@with_appcontext
def rollup_command(days):
    """Store the analytics cells of every closed day not stored yet (backfill)."""
    started = time.perf_counter()
    stored = roll_up(days_back=days)
    click.echo(f"stored {stored} closed days in {time.perf_counter() - started:.1f} s")


@medport.command("alert-tones")
def alert_tones_command():
    """Write the alert tones (one WAV per alert kind) into static/alerts/."""
    paths = write_all(os.path.join(current_app.static_folder, "alerts"))
    click.echo(f"wrote {len(paths)} tones")


@medport.command("relay")
@click.option("--once", is_flag=True, help="Deliver what is pending (and its follow-ups), then exit.")
@click.option("--poll", default=1.0, show_default=True, help="Seconds between idle polls.")
@click.option("--retry-parked", is_flag=True, help="Put parked events back in the queue first.")
@with_appcontext
def relay_command(once, poll, retry_parked):
    """Deliver outbox events (several relay processes may run together), and beside them, in a
    thread of its own, the alert emails and webhook posts."""
    if retry_parked:
        count = requeue()
        click.echo(f"{count} parked events queued again")
    relay = Relay(current_app._get_current_object())
    if once:
        delivered = relay.drain()
        click.echo(f"delivered {delivered} events")
        tried = Sender(current_app._get_current_object()).run_once()
        click.echo(f"alert deliveries tried: {tried}")
        return
    start_sender_thread(current_app._get_current_object())
    click.echo("relay running; Ctrl-C to stop")
    relay.run_forever(poll_seconds=poll)
