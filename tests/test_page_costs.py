"""Work a page does once, not per row or per use: the center registry read once per page view
(services/center_reads.py)."""
from dashboard.services import center_reads
from tests.test_stream import signed_in


def count_reads(monkeypatch):
    real = center_reads._read
    keys = []

    def spy(key, query, fallback):
        keys.append(key)
        return real(key, query, fallback)

    monkeypatch.setattr(center_reads, "_read", spy)
    return keys


def test_a_page_reads_the_registry_once(app, demo, monkeypatch):
    client = signed_in(app, "coordinator@medport.test")
    keys = count_reads(monkeypatch)
    assert client.get("/center/").status_code == 200  # its filters and its rows both name hospitals
    assert keys.count("registry") == 1
    assert client.get("/center/units").status_code == 200
    assert keys.count("registry") == 2  # each page view reads it again: a change shows at once


def test_a_form_reads_it_afresh(app, demo, monkeypatch):
    from dashboard.extensions import db

    with app.test_request_context("/center/", method="POST"):
        keys = count_reads(monkeypatch)
        center_reads.registry_names()
        center_reads.registry_names()
        db.session.remove()
    assert keys == ["registry", "registry"]
    with app.test_request_context("/center/", method="GET"):
        keys.clear()
        first = center_reads.registry_names()
        assert center_reads.registry_names() is first
        db.session.remove()
    assert keys == ["registry"]
