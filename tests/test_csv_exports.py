"""Every CSV export, through its real route: no cell a spreadsheet would run, numbers kept as
numbers, UTF-8 with a byte-order mark.

The demo region's unit numbers, agency, hospital and facility names, the awarded unit labels
of its trips and a few audit entries are replaced by text starting with each character a
spreadsheet reads as the start of a formula (``=``, ``+``, ``-``, ``@``, tab, CR), each with
an accented word ("Médic") that must come back intact.
"""
import csv
import io
import re

import pytest
import sqlalchemy as sa

from dashboard.analytics import presentation
from dashboard.extensions import db
from dashboard.models.center import Agency, AuditLog, Hospital
from dashboard.models.ems import Unit
from dashboard.models.hospital import HospitalFacility, TransportRequest
from dashboard.services import csvout
from tests.conftest import DEMO_PASSWORD

PREFIXES = ["=", "+", "-", "@", "\t", "\r"]
BOM = b"\xef\xbb\xbf"
NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def hostile(i, kind):
    """A value starting with a formula character, with an accented word: unique per ``i``."""
    if i == 0 and kind == "unit":
        return "=cmd|'/c calc'!A1"
    return f"{PREFIXES[i % len(PREFIXES)]}{kind} Médic {i}"


def _rename(model, column, kind):
    planted = []
    for i, row in enumerate(db.session.scalars(sa.select(model).order_by(model.id))):
        value = hostile(i, kind)
        setattr(row, column, value)
        planted.append(value)
    db.session.commit()  # one silo per transaction
    return planted


@pytest.fixture
def hostile_region(app, demo):
    """The demo region with every name that reaches an export made hostile; returns the values."""
    with app.app_context():
        planted = {
            "unit": _rename(Unit, "number", "unit"),
            "agency": _rename(Agency, "name", "agency"),
            "hospital": _rename(Hospital, "name", "hospital"),
            "facility": _rename(HospitalFacility, "name", "facility"),
            "label": _rename(TransportRequest, "awarded_unit_label", "label"),
        }
        audit = []
        for i, prefix in enumerate(PREFIXES):
            detail = f"{prefix}detail Médic {i}"
            db.session.add(AuditLog(action=f"{prefix}action.{i}", user_email=f"{prefix}someone@medport.test",
                                    entity_type="user", entity_id=f"{prefix}entity{i}", silo="center",
                                    detail=detail, after={"note": f"{prefix}after"}))
            audit.append(detail)
        planted["audit"] = audit
        db.session.commit()
    return planted


def _signed_in(app, email):
    client = app.test_client()
    assert client.post("/login", data={"email": email, "password": DEMO_PASSWORD}).status_code == 302
    return client


def export(client, url):
    """The export's rows, after checking the body: BOM first, UTF-8, no live formula anywhere."""
    response = client.get(url)
    assert response.status_code == 200, (url, response.data[:300])
    assert response.mimetype == "text/csv" and "attachment" in response.headers["Content-Disposition"]
    body = response.data
    assert body.startswith(BOM) and not body.startswith(BOM * 2), url
    text = body.decode("utf-8")  # strict: any other encoding fails here
    assert "Ã" not in text, url
    rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))
    for row in rows:
        for value in row:
            if value[:1] in PREFIXES:
                assert NUMBER.fullmatch(value), f"{url}: live formula {value!r}"
    return rows


def assert_neutralised(rows, planted, url):
    """Each planted value that the export shows comes as ``'`` + value; at least one is shown."""
    cells = [value for row in rows for value in row]
    shown = [value for value in planted if any(value in cell for cell in cells)]
    assert shown, f"{url} shows none of {planted[:3]!r}…"
    for value in shown:
        assert any(cell.startswith("'" + value) for cell in cells), f"{url}: {value!r} not neutralised"
    assert any("Médic" in value for value in shown), url


def _analytics(client, base, tables):
    """Every table of a view (and its trips) exported over 30 days; returns {table: rows}."""
    return {name: export(client, f"{base}?period=30d&format=csv&table={name}") for name in tables}


def test_every_center_export_is_neutralised_and_utf8(app, hostile_region):
    client = _signed_in(app, "coordinator@medport.test")
    names = presentation.table_names() + ("trips",)
    tables = _analytics(client, "/center/analytics", names)
    assert_neutralised(tables["units"], hostile_region["unit"], "units")
    assert_neutralised(tables["agencies"], hostile_region["agency"], "agencies")
    assert_neutralised(tables["hospitals"], hostile_region["hospital"], "hospitals")
    assert_neutralised(tables["trips"], hostile_region["facility"], "trips (facilities)")
    assert_neutralised(tables["trips"], hostile_region["label"], "trips (units)")
    # Numbers stay numbers: counts, shares and minutes are written bare.
    header, *body = tables["hospitals"]
    assert body and all(NUMBER.fullmatch(row[1]) for row in body)
    header, *body = tables["trips"]
    eta = header.index("awarded_eta_minutes")
    assert any(NUMBER.fullmatch(row[eta]) for row in body)

    rows = export(client, "/center/audit/export.csv")
    assert_neutralised(rows, hostile_region["audit"], "audit detail")
    header = rows[0]
    by_action = {row[header.index("action")]: row for row in rows[1:]}
    for i, prefix in enumerate(PREFIXES):
        row = by_action["'" + f"{prefix}action.{i}"]
        assert row[header.index("user_email")] == f"'{prefix}someone@medport.test"
        assert row[header.index("entity_id")] == f"'{prefix}entity{i}"
        assert NUMBER.fullmatch(row[header.index("id")])


def test_every_hospital_export_is_neutralised_and_utf8(app, hostile_region):
    client = _signed_in(app, "nurse@altoona.medport.test")
    names = presentation.table_names(include_units=False) + ("trips",)
    tables = _analytics(client, "/hospital/analytics", names)
    assert_neutralised(tables["hospitals"], hostile_region["hospital"], "hospitals")
    assert_neutralised(tables["trips"], hostile_region["facility"], "trips")


def test_every_ems_export_is_neutralised_and_utf8(app, hostile_region):
    client = _signed_in(app, "dispatch@altoonaems.medport.test")
    names = presentation.table_names() + ("trips",)
    tables = _analytics(client, "/ems/analytics", names)
    assert_neutralised(tables["units"], hostile_region["unit"], "units")
    assert_neutralised(tables["agencies"], hostile_region["agency"], "agencies")
    assert_neutralised(tables["trips"], hostile_region["label"], "trips")
    rows = export(client, "/ems/trips.csv")
    assert_neutralised(rows, hostile_region["unit"], "ems trips (units)")
    assert_neutralised(rows, hostile_region["facility"], "ems trips (facilities)")


def test_the_trips_exports_stream_with_the_bom_once(app, hostile_region):
    client = _signed_in(app, "dispatch@altoonaems.medport.test")
    for url in ("/ems/trips.csv", "/ems/analytics?period=30d&format=csv&table=trips"):
        response = client.get(url)
        assert response.is_streamed, url
        pieces = [piece for piece in response.response if piece]
        assert pieces[0].startswith(BOM) and all(BOM not in piece for piece in pieces[1:]), url
        response.close()


@pytest.mark.parametrize("value,expected", [
    (None, ""), (0, 0), (-5, -5), (-2.5, -2.5), (3.25, 3.25), (True, "True"),
    ("-5", "'-5"), ("=1+1", "'=1+1"), ("+1", "'+1"), ("@A1", "'@A1"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("Médic 1", "Médic 1"), ("a=b", "a=b"), ("", ""),
])
def test_a_cell_is_neutralised_unless_it_is_a_number(value, expected):
    assert csvout.cell(value) == expected


def test_negative_numbers_are_written_as_numbers():
    text = csvout.text(["n", "label"], [[-3, "-3"], [-0.5, "=x"]])
    assert text == "\ufeffn,label\r\n-3,'-3\r\n-0.5,'=x\r\n"
