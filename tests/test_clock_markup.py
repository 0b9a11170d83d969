"""Clocks the page's script keeps moving: the markup the server renders for them."""
from datetime import datetime, timedelta

from dashboard.localtime import to_local
from dashboard.templating import eta_clock, relative_time

NOW = datetime(2026, 12, 1, 14, 0, 30)


def test_relative_time_names_its_instant_and_reads_like_the_script(app):
    with app.app_context():
        assert str(relative_time(NOW + timedelta(minutes=6), NOW)) == (
            '<time datetime="2026-12-01T14:06:30Z" data-relative="ago">in 6 min</time>')
        assert str(relative_time(NOW - timedelta(minutes=3, seconds=59), NOW)) == (
            '<time datetime="2026-12-01T13:56:31Z" data-relative="ago">3 min ago</time>')
        assert str(relative_time(NOW - timedelta(hours=2, minutes=5), NOW, ago=False)) == (
            '<time datetime="2026-12-01T11:55:30Z" data-relative="bare">2 h 05 min</time>')
        assert str(relative_time(NOW - timedelta(hours=2, minutes=28), NOW)) == (
            '<time datetime="2026-12-01T11:32:30Z" data-relative="ago">2 h 28 min ago</time>')
        assert relative_time(None, NOW) == "—"


def test_an_eta_is_a_clock_time_with_its_age(app):
    with app.app_context():
        given = NOW - timedelta(minutes=18)
        html = str(eta_clock(given, 50, NOW))
        arrival = to_local(given + timedelta(minutes=50)).strftime("%H:%M")
        assert html == (f'ETA <time datetime="2026-12-01T14:32:30Z">{arrival}</time>, given '
                        '<time datetime="2026-12-01T13:42:30Z" data-relative="ago">18 min ago</time>')
        assert str(eta_clock(given, 50, NOW, lead="arriving ")).startswith(f'arriving <time datetime="2026-12-01T14:32:30Z">{arrival}</time>')
        assert eta_clock(None, 20, NOW) == "ETA 20 min"
        assert eta_clock(given, None, NOW) == "—"


def test_every_live_page_marks_its_clocks(app, demo, client, auth):
    assert auth.login("dispatch@altoonaems.medport.test").status_code == 302
    assert 'data-relative="ago"' in client.get("/ems/").get_data(as_text=True)
    auth.logout()
    assert auth.login("coordinator@medport.test").status_code == 302
    assert 'data-relative="bare"' in client.get("/center/").get_data(as_text=True)
