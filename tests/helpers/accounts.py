"""The demo region's accounts (all with ``DEMO_PASSWORD``), signing in, and reading pages and
the live stream.
"""
import re

DEMO_PASSWORD = "medport-demo"

AEMS = "dispatch@altoonaems.medport.test"      # BLS, ALS, CCT; preferred by ALT
CLL = "dispatch@centrelifelink.medport.test"   # BLS, ALS; not preferred by ALT
CMT = "dispatch@cambriamedical.medport.test"   # BLS, ALS, CCT; not preferred by ALT
HCR = "dispatch@huntingdonrescue.medport.test"  # BLS only
ALT_NURSE = "nurse@altoona.medport.test"
JMH_NURSE = "nurse@johnstown.medport.test"
COORDINATOR = "coordinator@medport.test"
#: The same accounts under the names some modules know them by.
DISPATCH_AEMS = AEMS
NURSE_ALT = ALT_NURSE
CORD = COORDINATOR
#: The reason the level-of-care override tests give.
REASON = "Hospital respiratory therapist rides along"


def signed_in(app, email):
    """A fresh client signed in as ``email``."""
    client = app.test_client()
    response = client.post("/login", data={"email": email, "password": DEMO_PASSWORD})
    assert response.status_code == 302, response.data
    return client


def text(response):
    """The response body as text."""
    return response.get_data(as_text=True)


def row_of(html, reference):
    """The board's table row that shows ``reference``."""
    match = re.search(r"<tr[^>]*>(?:(?!</tr>).)*" + re.escape(reference) + r".*?</tr>", html, re.S)
    assert match, f"{reference} not on the page"
    return match.group(0)


class Stream:
    """An open ``/events`` response, read one chunk at a time (each read is bounded by the
    keep-alive interval; the stream itself ends after ``MEDPORT_STREAM_MAX_SECONDS``)."""

    def __init__(self, client, headers=None, query=""):
        self.response = client.get("/events" + query, headers=headers or {}, buffered=False)
        self.chunks = iter(self.response.response)
        self.text = ""
        self.ended = False

    def read(self):
        try:
            chunk = next(self.chunks)
        except StopIteration:
            self.ended = True
            return ""
        chunk = chunk.decode() if isinstance(chunk, bytes) else chunk
        self.text += chunk
        return chunk

    def read_until(self, needle, max_reads=50):
        """Read until ``needle`` arrived (True) or the stream ended / reads ran out (False)."""
        for _ in range(max_reads):
            if needle in self.text:
                return True
            if self.ended:
                return False
            self.read()
        return needle in self.text

    def read_to_end(self, max_reads=200):
        for _ in range(max_reads):
            if self.ended:
                break
            self.read()
        return self.text

    def close(self):
        self.response.close()
