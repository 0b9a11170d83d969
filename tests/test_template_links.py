"""The templates' ``url_for`` remembers links, and gives the link ``url_for`` builds in every case
(dashboard/templating.py ``cached_url_for``)."""
import pytest
from werkzeug.routing import BuildError

from dashboard.templating import cached_url_for


@pytest.fixture
def links(app):
    return cached_url_for(app)


def test_the_same_links_as_url_for(app, links):
    cases = [("hospital.dashboard", {}), ("static", {"filename": "medport.css"}),
             ("hospital.dashboard", {"sort": "-window", "page": 3}),
             ("hospital.dashboard", {"page": 3, "sort": "-window"}),
             ("hospital.dashboard", {"page": 1}), ("hospital.dashboard", {"page": True}),
             ("hospital.dashboard", {"tab": ["open", "active"]}),
             ("hospital.dashboard", {"_anchor": "requests"}), ("hospital.dashboard", {"_external": True})]
    with app.test_request_context("/hospital/"):
        for _ in range(2):  # built, then remembered
            for endpoint, values in cases:
                assert links(endpoint, **values) == app.url_for(endpoint, **values), (endpoint, values)
    with app.test_request_context("/hospital/"):
        assert links("hospital.dashboard", page=3, sort="-window") == "/hospital/?page=3&sort=-window"
        assert links("hospital.dashboard", page=True) == "/hospital/?page=True"


def test_a_relative_endpoint_is_its_blueprints(app, links):
    with app.test_request_context("/hospital/"):
        hospital = links(".dashboard")
    with app.test_request_context("/center/"):
        center = links(".board")
    assert hospital == "/hospital/" and center == "/center/"
    with app.test_request_context("/ems/"):
        with pytest.raises(BuildError):
            links(".dashboard")  # the EMS blueprint has none; the hospital's link is not reused


def test_a_script_root_is_part_of_the_link(app, links):
    with app.test_request_context("/hospital/"):
        bare = links("hospital.dashboard")
    with app.test_request_context("/hospital/", base_url="http://localhost/medport"):
        rooted = links("hospital.dashboard")
    assert (bare, rooted) == ("/hospital/", "/medport/hospital/")


def test_outside_a_request_it_is_url_for(app, links):
    app.config["SERVER_NAME"] = "medport.example"
    try:
        with app.app_context():
            assert links("hospital.dashboard") == app.url_for("hospital.dashboard") \
                == "http://medport.example/hospital/"
    finally:
        app.config["SERVER_NAME"] = None
