"""Layout at laptop sizes (1280×900, 1440×900): the boards show more than 11 requests on screen,
references never wrap inside, the bids table is readable, the sort control reorders rows (and the
live refresh keeps the order), and the analytics pages have a contents bar and folding sections.

Measured from the DOM: a row counts when its box lies wholly inside the viewport; a reference
is on one line when its element has a single client rect.  Layout does not depend on the
database, so these run on the embedded-default server, as ``test_pages`` does.
"""
import pytest
import sqlalchemy as sa

from dashboard import create_app
from dashboard.events.outbox import Actor
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.center import Hospital
from dashboard.models.hospital import HospitalFacility
from dashboard.services import trip_posting

from .conftest import layout_problems, run_axe, screenshot, wait_for
from .helpers import LIVE

NURSE = "nurse@altoona.medport.test"
DISPATCH = "dispatch@altoonaems.medport.test"
COORDINATOR = "coordinator@medport.test"
SIZES = [(1280, 900), (1440, 900)]
BOARDS = [  # (who, path, the board's table)
    (NURSE, "/hospital/", "#requests-panel table"),
    (DISPATCH, "/ems/", "#board-panel table"),
    (COORDINATOR, "/center/", "#board-panel section[aria-labelledby=group-open] table"),
]
SEEDED = 30
NEXT_FRAME = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"

ROWS_IN_VIEW = """
(selector) => {
  const table = document.querySelector(selector);
  if (!table) return -1;
  return Array.from(table.tBodies[0].rows).filter(row => {
    const box = row.getBoundingClientRect();
    return box.height > 0 && box.top >= 0 && box.bottom <= window.innerHeight;
  }).length;
}
"""

# Elements that hold one token each (a reference, a patient reference, a unit, a time range),
# and how many client rects each has: more than one means it wrapped.
WRAPPED_TOKENS = """
(selector) => {
  const wrapped = [];
  let seen = 0;
  for (const table of document.querySelectorAll(selector)) {
    for (const el of table.querySelectorAll('td.ref > a, td.patient-ref-cell, .unit-name, td.when')) {
      seen += 1;
      const range = document.createRange();
      range.selectNodeContents(el);
      // Tops within half a line of each other are one line (a badge's box sits a pixel off its text).
      const half = (parseFloat(getComputedStyle(el).lineHeight) || 20) / 2;
      const tops = Array.from(range.getClientRects()).filter(r => r.width > 0).map(r => r.top).sort((a, b) => a - b);
      if (tops.filter((top, i) => i === 0 || top - tops[i - 1] > half).length > 1) wrapped.push(el.textContent.trim().slice(0, 40));
    }
  }
  return {seen, wrapped};
}
"""

# The lines of text each cell takes: the tops of its visible text's boxes, those within half a
# line of each other counted as one line (a badge's text sits a pixel or two off the line's).
CELL_LINES = """
(selector) => Array.from(document.querySelectorAll(selector)).map(td => {
  const half = (parseFloat(getComputedStyle(td).lineHeight) || 20) / 2;
  const tops = [];
  const walker = document.createTreeWalker(td, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (!node.textContent.trim() || node.parentElement.closest('.visually-hidden')) continue;
    const range = document.createRange();
    range.selectNodeContents(node);
    for (const r of range.getClientRects()) if (r.width > 0) tops.push(r.top);
  }
  tops.sort((a, b) => a - b);
  const lines = tops.filter((top, i) => i === 0 || top - tops[i - 1] > half).length;
  return [td.textContent.trim().replace(/\\s+/g, ' ').slice(0, 30), lines, td.querySelectorAll('br').length];
})
"""

# The cells of the time columns (found by their heading, whatever the cells' classes) that
# take more lines than they hold <br>s: a time or a time range must never wrap.
WRAPPED_TIMES = """
(selector) => {
  const wrapped = [];
  let seen = 0;
  for (const table of document.querySelectorAll(selector)) {
    const heads = Array.from(table.tHead.rows[0].cells).map(th => th.textContent.trim());
    const timed = heads.map((h, i) => /^(Posted|Pickup window|Window|Bidding closes|Deadline|Completed|Cancelled)/.test(h) ? i : -1)
      .filter(i => i >= 0);
    for (const row of table.tBodies[0].rows) {
      for (const i of timed) {
        const td = row.cells[i];
        if (!td) continue;
        seen += 1;
        const range = document.createRange();
        range.selectNodeContents(td);
        const half = (parseFloat(getComputedStyle(td).lineHeight) || 20) / 2;
        const tops = Array.from(range.getClientRects()).filter(r => r.width > 0).map(r => r.top).sort((a, b) => a - b);
        const lines = tops.filter((top, k) => k === 0 || top - tops[k - 1] > half).length;
        if (lines > 1 + td.querySelectorAll('br').length) wrapped.push(heads[i] + ': ' + td.textContent.trim().replace(/\\s+/g, ' '));
      }
    }
  }
  return {seen, wrapped};
}
"""

# Whether an input's placeholder fits in its box (measured in the input's own font).
PLACEHOLDER_FITS = """
(selector) => {
  const input = document.querySelector(selector);
  const style = getComputedStyle(input);
  const context = document.createElement('canvas').getContext('2d');
  context.font = `${style.fontStyle} ${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
  const room = input.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return {text: input.placeholder, needs: Math.ceil(context.measureText(input.placeholder).width), room};
}
"""

FITS = """
(selector) => Array.from(document.querySelectorAll(selector)).map(table => {
  const wrap = table.closest('.table-wrap');
  return wrap ? wrap.scrollWidth - wrap.clientWidth : 0;
})
"""


ROUTE_DESTINATION = "Bedford County Community Hospital, 10455 Lincoln Highway, Everett, PA 15537"
LONG_WORD = "Tracheostomyandsuctioning" * 8  # 200 letters, no space


def realistic(i, now):
    """Row ``i`` of a busy morning: long pickup places and destinations; every third above its
    level of care under an override; needs; some emergent, some with the pickup window closing
    (the regional board's at-risk marks, several to a row)."""
    from datetime import timedelta

    fields = dict(pickup_location=f"Cardiothoracic intensive care unit, 4 West, room {400 + i}",
                  destination_address=ROUTE_DESTINATION, oxygen_lpm=(2, 0, 4)[i % 3],
                  other_needs="Fall risk, hard of hearing" if i % 4 == 0 else "")
    if i % 3 == 0:
        fields["cardiac_monitor"] = True
    if i % 5 == 1:
        fields.update(window_start=now + timedelta(minutes=2), window_end=now + timedelta(minutes=14),
                      bid_deadline=now + timedelta(minutes=1))
    return fields


def seed_open_requests(server, count, realistic_rows=False, back_date=None, care_override=None, **overrides):
    """``count`` open requests at Altoona (BLS, invited to every agency), posted through the
    service into the served silos; the server's relay tells the boards.  ``realistic_rows``
    gives them the long names, overrides and needs of :func:`realistic`; ``back_date`` (a
    timedelta) moves their posting time back, so the regional board marks them "no bids".
    Returns the references."""
    urls = server.database_urls
    app = create_app({"SECRET_KEY": "layout-seed", "MEDPORT_INPROCESS_RELAY": False,
                      "MEDPORT_SIGNAL_BACKEND": "local", "SQLALCHEMY_DATABASE_URI": urls["center"],
                      "SQLALCHEMY_BINDS": {"hospital": {"url": urls["hospital"]}, "ems": {"url": urls["ems"]}}})
    references = []
    with app.app_context():
        from datetime import timedelta

        hospital = db.session.scalar(sa.select(Hospital).where(Hospital.short_code == "ALT"))
        origin = db.session.scalar(sa.select(HospitalFacility).where(HospitalFacility.hospital_id == hospital.id))
        now = utcnow()
        for i in range(count):
            fields = dict(
                origin_facility_id=origin.id, pickup_location=f"4 West, room {400 + i}",
                destination_address="12 Home Street, Altoona, PA", level_of_care="BLS", mobility="stretcher",
                urgency=("routine", "urgent", "emergent")[i % 3],
                window_start=now + timedelta(minutes=180 + (i * 37) % 480),
                window_end=now + timedelta(minutes=240 + (i * 37) % 480), patient_ref="", age_group="adult",
                weight_kg=80, bid_deadline=now + timedelta(minutes=60 + (i * 53) % 110), invite_mode="all")
            if realistic_rows:
                fields.update(realistic(i, now))
            fields.update(overrides)
            reason = care_override
            if realistic_rows and fields.get("cardiac_monitor") and reason is None:
                reason = "The hospital's ALS nurse rides along with the monitor."
            trip = trip_posting.post(hospital.id, "ALT", fields, care_override=reason, actor=Actor(1, None, "Layout check"))
            if back_date is not None:
                trip.created_at = now - back_date
            db.session.commit()
            references.append(trip.reference)
        for engine in db.engines.values():
            engine.dispose()
    return references


@pytest.fixture
def busy(live_server):
    """The served region with ``SEEDED`` more open requests (once per server), realistic ones
    (:func:`realistic`, half of them posted 2 h 28 min ago, unbid), and one whose free text
    holds unbroken words: :data:`LONG_WORD` in its other needs, a 120-letter pickup location,
    a 300-character override reason with a 120-letter word (``live_server.long_text_reference``)."""
    if not getattr(live_server, "layout_seeded", False):
        from datetime import timedelta

        seed_open_requests(live_server, SEEDED // 2, realistic_rows=True, back_date=timedelta(hours=2, minutes=28))
        seed_open_requests(live_server, SEEDED - SEEDED // 2, realistic_rows=True)
        reason = ("Respiratory therapist from the unit rides along: " + "Ventilatorandairwaymanagement" * 4
                  + "xxxx " + "she stays with the patient until handover at the receiving unit. " * 2)[:300]
        (live_server.long_text_reference,) = seed_open_requests(
            live_server, 1, urgency="emergent", ventilator=True, care_override=reason, other_needs=LONG_WORD,
            pickup_location="Intensivecareunitfourwest" * 4 + "Roomfourtwelvebedb",
            notes="Handover to " + "Receivingnurseatthebedside" * 5,
            bid_deadline=utcnow() + timedelta(minutes=20))
        live_server.layout_seeded = True
    return live_server


def settle(page):
    page.wait_for_load_state("networkidle")
    page.evaluate(NEXT_FRAME)


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
@pytest.mark.parametrize("width,height", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_boards_show_more_than_eleven_requests_and_keep_references_whole(open_session, busy, width, height):
    problems = []
    for who, path, table in BOARDS:
        session = open_session(who, width=width, height=height)
        page = session.page
        session.goto(path)
        settle(page)
        name = f"{width}x{height}-board{path.replace('/', '_')}"
        screenshot(page, name)
        rows = page.evaluate(ROWS_IN_VIEW, table)
        if rows <= 11:
            problems.append(f"{name}: {rows} rows wholly on screen")
        tokens = page.evaluate(WRAPPED_TOKENS, table)
        if tokens["seen"] < 12 or tokens["wrapped"]:
            problems.append(f"{name}: {tokens['seen']} references checked, wrapped: {tokens['wrapped'][:5]}")
        overflow = [px for px in page.evaluate(FITS, "main table") if px > 1]
        if overflow:
            problems.append(f"{name}: a table is wider than its box by {overflow} px")
        times = page.evaluate(WRAPPED_TIMES, table)
        if times["seen"] < 12 or times["wrapped"]:
            problems.append(f"{name}: {times['seen']} times checked, wrapped: {times['wrapped'][:5]}")
        if path == "/hospital/":
            search = page.evaluate(PLACEHOLDER_FITS, "input#q")
            if search["needs"] > search["room"]:
                problems.append(f"{name}: the search placeholder is cut: {search}")
        layout = layout_problems(page)
        if layout:
            problems.append(f"{name}: {layout}")
        violations = run_axe(page)
        if violations:
            problems.append(f"{name}: axe {violations}")
        # Every other order of the board keeps more than 11 rows on screen.
        for sort_link in page.eval_on_selector_all("nav.sort-control a:not([aria-current])",
                                                   "links => links.map(a => a.getAttribute('href'))"):
            session.goto(sort_link)
            settle(page)
            rows = page.evaluate(ROWS_IN_VIEW, table)
            if rows <= 11:
                screenshot(page, f"{name}-{sort_link.rsplit('=', 1)[-1]}")
                problems.append(f"{name} {sort_link}: {rows} rows wholly on screen")
        assert session.errors == []
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
@pytest.mark.parametrize("width,height", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_the_bids_table_is_readable(open_session, busy, width, height):
    """A request with bids: every cell but the note on one line, the table within its box."""
    (public_id, hospital_id), = busy.query(
        "hospital", "SELECT public_id, hospital_id FROM transport_requests WHERE status = 'open' "
                    "AND bid_count >= 2 ORDER BY bid_count DESC, id LIMIT 1")
    (nurse,), = busy.query("center", "SELECT email FROM users WHERE role = 'hospital' AND hospital_id = :h "
                                     "ORDER BY id LIMIT 1", h=hospital_id)
    problems = []
    for who, path in ((nurse, f"/hospital/requests/{public_id}"), (COORDINATOR, f"/center/requests/{public_id}")):
        session = open_session(who, width=width, height=height)
        page = session.page
        session.goto(path)
        page.locator("table.bids tbody tr").first.wait_for()
        settle(page)
        name = f"{width}x{height}-bids{path.split('/')[1]}"
        screenshot(page, name)
        cells = page.evaluate(CELL_LINES, "table.bids tbody td:not(.note)")
        squeezed = [text for text, lines, breaks in cells if lines > 1 + breaks]
        if not cells or squeezed:
            problems.append(f"{name}: {len(cells)} cells, wrapped: {squeezed[:5]}")
        overflow = [px for px in page.evaluate(FITS, "table.bids") if px > 1]
        if overflow:
            problems.append(f"{name}: the bids table is wider than its box by {overflow} px")
        layout = layout_problems(page)
        if layout:
            problems.append(f"{name}: {layout}")
    assert problems == [], "\n".join(problems)


def _references(page, table):
    return page.eval_on_selector_all(f"{table} tbody td.ref > a", "links => links.map(a => a.textContent.trim())")


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_the_sort_control_reorders_rows_and_the_live_refresh_keeps_the_order(open_session, busy):
    session = open_session(NURSE, width=1280, height=900)
    page = session.page
    session.goto("/hospital/")
    settle(page)
    table = "#requests-panel table"
    (hospital_id,), = busy.query("center", "SELECT hospital_id FROM users WHERE email = :e", e=NURSE)
    by_deadline = [r for (r,) in busy.query(
        "hospital", "SELECT reference FROM transport_requests WHERE status = 'open' AND hospital_id = :h "
                    "ORDER BY bid_deadline, id LIMIT 25", h=hospital_id)]
    before = _references(page, table)
    assert before and before != by_deadline  # the default order (urgency) is another one
    page.click("nav.sort-control a[data-sort=deadline]")
    page.wait_for_url("**/hospital/?sort=deadline")
    settle(page)
    assert _references(page, table) == by_deadline
    assert page.get_attribute("nav.sort-control a[aria-current=true]", "data-sort") == "deadline"
    # A request posted now, closing first, arrives by the live refresh at the top: the refreshed
    # panel kept the sort (in the default order a routine request would not lead).  It closes a
    # minute before the first to close of those on the board (some close within minutes).
    from datetime import datetime, timedelta

    (earliest,), = busy.query("hospital", "SELECT MIN(bid_deadline) FROM transport_requests "
                                          "WHERE status = 'open' AND hospital_id = :h", h=hospital_id)
    if isinstance(earliest, str):
        earliest = datetime.fromisoformat(earliest)
    now = utcnow()
    (reference,) = seed_open_requests(busy, 1, urgency="routine",
                                      bid_deadline=min(now + timedelta(minutes=5), earliest - timedelta(minutes=1)),
                                      window_start=now + timedelta(hours=5), window_end=now + timedelta(hours=6))
    wait_for("the new request on the board", lambda: reference in _references(page, table), timeout=LIVE / 1000)
    assert _references(page, table)[0] == reference
    assert "sort=deadline" in page.get_attribute("#requests-panel", "hx-get")
    # The next page keeps the order too.
    page.click("nav.pager a[rel=next]")
    page.wait_for_url("**/hospital/?sort=deadline&page=2")
    settle(page)
    assert page.locator("nav.pager", has_text="Showing 26–").count() == 1


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
@pytest.mark.parametrize("width,height", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_analytics_has_a_contents_bar_and_sections_that_fold(open_session, live_server, width, height):
    session = open_session(COORDINATOR, width=width, height=height)
    page = session.page
    session.goto("/center/analytics?period=30d")
    settle(page)
    links = page.locator("nav.analytics-nav a")
    assert links.count() >= 8
    folded = page.evaluate("() => Array.from(document.querySelectorAll('section.fold > details'))"
                           ".map(d => [d.parentElement.id, d.open])")
    assert ("volume", True) in [tuple(f) for f in folded] and any(not is_open for _id, is_open in folded)
    closed_height = page.evaluate("document.documentElement.scrollHeight")
    assert closed_height < 7000
    # A link to a folded section opens it and brings it under the contents bar, which stays in sight.
    target = next(section for section, is_open in folded if not is_open)
    page.click(f"nav.analytics-nav a[href='#{target}']")
    page.wait_for_function("(id) => document.getElementById(id).querySelector('details').open", arg=target)
    settle(page)
    placed = page.evaluate("""(id) => {
      const nav = document.querySelector('nav.analytics-nav').getBoundingClientRect();
      const heading = document.getElementById(id).querySelector('summary').getBoundingClientRect();
      return {navTop: nav.top, navBottom: nav.bottom, headingTop: heading.top, scrolled: window.scrollY};
    }""", target)
    assert placed["scrolled"] > 0 and abs(placed["navTop"]) < 1
    assert placed["navBottom"] <= placed["headingTop"] < placed["navBottom"] + 60, placed
    # A section folds by its summary, by keyboard too.
    page.focus(f"#{target} summary")
    page.keyboard.press("Enter")
    page.wait_for_function("(id) => !document.getElementById(id).querySelector('details').open", arg=target)
    screenshot(page, f"{width}x{height}-center-analytics-folded")
    violations = run_axe(page)
    assert violations == []
    page.evaluate("window.scrollTo(0, 0)")
    settle(page)
    assert layout_problems(page) == []
    assert session.errors == []


REQUEST_PAGES = [(NURSE, "/hospital/requests/{}"), (DISPATCH, "/ems/requests/{}"), (COORDINATOR, "/center/requests/{}")]

# Free text that runs out of its box: an element whose text-holding box reaches past its parent's.
SPILLED_TEXT = """
() => {
  const spilled = [];
  for (const el of document.querySelectorAll('main dd, main p, main li, main td')) {
    if (!el.textContent.trim() || el.closest('.visually-hidden')) continue;
    const parent = el.parentElement.getBoundingClientRect();
    const range = document.createRange();
    range.selectNodeContents(el);
    const right = Math.max(...Array.from(range.getClientRects()).map(r => r.right));
    if (right > parent.right + 1) spilled.push(el.tagName + ' "' + el.textContent.trim().slice(0, 30) + '" by ' + Math.round(right - parent.right) + ' px');
  }
  return spilled;
}
"""


# Each place the reference is written in the page's main part, and on how many lines.
REFERENCE_LINES = """
(reference) => {
  const found = [];
  const walker = document.createTreeWalker(document.querySelector('main'), NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const at = node.textContent.indexOf(reference);
    if (at < 0 || node.parentElement.closest('.visually-hidden, title, script')) continue;
    const range = document.createRange();
    range.setStart(node, at);
    range.setEnd(node, at + reference.length);
    const tops = Array.from(range.getClientRects()).filter(r => r.width > 0).map(r => Math.round(r.top));
    if (tops.length) found.push(new Set(tops).size);
  }
  return found;
}
"""


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
@pytest.mark.parametrize("width,height", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_unbroken_words_wrap_on_the_request_pages_and_references_do_not(open_session, busy, width, height):
    """A 300-character override reason with a 120-letter word, 200 letters of other needs and
    an unbroken note: each wraps in its box on the three request pages, no page is wider than
    the window, and the request's reference stays on one line."""
    (public_id,), = busy.query("hospital", "SELECT public_id FROM transport_requests WHERE reference = :r",
                               r=busy.long_text_reference)
    problems = []
    for who, path in REQUEST_PAGES:
        session = open_session(who, width=width, height=height)
        page = session.page
        session.goto(path.format(public_id))
        page.get_by_text("Tracheostomyandsuctioning", exact=False).first.wait_for()
        settle(page)
        name = f"{width}x{height}-long-text{path.split('/')[1]}"
        screenshot(page, name)
        wide = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        if wide[0] > wide[1] + 1:
            problems.append(f"{name}: the page is {wide[0]} px wide in a {wide[1]} px window")
        spilled = page.evaluate(SPILLED_TEXT)
        if spilled:
            problems.append(f"{name}: text out of its box: {spilled[:5]}")
        references = page.evaluate(REFERENCE_LINES, busy.long_text_reference)
        if not references or max(references) > 1:
            problems.append(f"{name}: the reference's lines: {references}")
        assert session.errors == []
    assert problems == [], "\n".join(problems)


CHECKBOXES = """
() => Array.from(document.querySelectorAll('.check-row input[type=checkbox]')).map(box => {
  const r = box.getBoundingClientRect();
  return [box.name, Math.round(r.left), Math.round(r.top)];
})
"""


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_a_field_error_on_the_edit_page_moves_no_checkbox(open_session, busy):
    """The edit page of a BLS request under a ventilator override: a cardiac monitor ticked
    (refused, with a message under it) leaves the needs' checkboxes where they were, on one
    line; the "Override in place" line keeps its distance from the "Other needs" label."""
    (public_id,), = busy.query("hospital", "SELECT public_id FROM transport_requests WHERE reference = :r",
                               r=busy.long_text_reference)
    session = open_session(NURSE, width=1280, height=900)
    page = session.page
    session.goto(f"/hospital/requests/{public_id}/edit")
    settle(page)
    before = page.evaluate(CHECKBOXES)
    gap = page.evaluate("""() => {
      const note = Array.from(document.querySelectorAll('.care-override p')).find(p => p.textContent.includes('Override in place'));
      const label = document.querySelector('label[for=other_needs]');
      return label.getBoundingClientRect().top - note.getBoundingClientRect().bottom;
    }""")
    assert gap >= 8, f"the override line is {gap} px from the Other needs label"
    page.check("input[name=cardiac_monitor]")
    page.click("button[type=submit].primary")
    page.locator("#cardiac_monitor-msg .error").wait_for()
    settle(page)
    screenshot(page, "1280x900-edit-field-error")
    after = page.evaluate(CHECKBOXES)
    # The message above the form moves the whole form down; no box moves sideways or off the line.
    assert len(before) == 3 and len({top for _name, _left, top in after}) == 1
    assert [(name, left) for name, left, _top in after] == [(name, left) for name, left, _top in before]
    assert layout_problems(page) == []
