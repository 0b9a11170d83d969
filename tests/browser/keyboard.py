"""Keyboard-only driving of a page: Tab, Shift+Tab, typing, arrows, Space and Enter.

Nothing here clicks or fills a locator.  Focus starts at a known place (the skip link,
then the main region it leads to) and moves only by Tab.  Every stop on the way is
checked for a visible focus indicator, and a Tab that leaves focus where it was (or
drops it on the page body) counts as a trap.
"""
import re

# What the focused element is, and whether its focus can be seen.
# ``selector``, when given, is also tested on it (``match``: null when it is not plain CSS,
# such as Playwright's ``:has-text()``), saving a second round trip per key press.
FOCUSED_JS = """
(selector) => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  let match = null;
  if (selector) { try { match = el.matches(selector); } catch (e) { match = null; } }
  const style = getComputedStyle(el);
  const outline = style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0;
  const shadow = style.boxShadow && style.boxShadow !== 'none';
  const label = el.labels && el.labels.length ? el.labels[0].textContent.trim() : '';
  return {
    key: el.tagName.toLowerCase() + '#' + (el.id || '') + '[' + (el.getAttribute('name') || '') + ']'
         + (el.type === 'radio' || el.type === 'checkbox' ? '=' + el.value : '')
         + (el.id || el.name ? '' : ':' + (el.textContent || '').trim().slice(0, 40)),
    visible: outline || shadow,
    text: (el.textContent || '').trim().slice(0, 60),
    label: label.slice(0, 60),
    type: el.type || '',
    value: el.value === undefined ? null : el.value,
    checked: !!el.checked,
    match: match,
  };
}
"""


class KeyboardTrap(AssertionError):
    pass


class Keyboard:
    """One page driven by the keyboard, remembering every stop without a visible focus."""

    def __init__(self, page):
        self.page = page
        self.unseen = []  # stops whose focus could not be seen
        self.path = []

    # -- where focus is ----------------------------------------------------------------------
    def focused(self, selector=None):
        return self.page.evaluate(FOCUSED_JS, selector)

    def matches(self, selector, info=None):
        """Whether the focused element is one of ``selector`` (a Playwright selector).

        ``info`` is what :meth:`focused` read with the same selector, if it could tell."""
        if info is not None and info.get("match") is not None:
            return info["match"]
        return self.page.locator(selector).evaluate_all("els => els.includes(document.activeElement)")

    def _note(self, selector=None):
        info = self.focused(selector)
        if info is None:
            raise KeyboardTrap(f"focus fell to the page body after {self.path[-5:]}")
        self.path.append(info["key"])
        if not info["visible"] and info["key"] not in self.unseen:
            self.unseen.append(info["key"])
        return info

    # -- moving ------------------------------------------------------------------------------
    def start(self):
        """From the top of a freshly loaded page: Tab to the skip link, Enter, land in main.

        A page that puts focus in a field itself (autofocus) starts there instead.
        """
        self.page.wait_for_load_state("networkidle")
        if self.page.evaluate("document.activeElement && document.activeElement !== document.body"):
            self._note()
            return self
        self.page.keyboard.press("Tab")
        info = self._note()
        assert "skip" in info["text"].lower(), f"the first Tab reaches the skip link, not {info}"
        self.page.keyboard.press("Enter")
        self.page.wait_for_function("document.activeElement && document.activeElement.id === 'main'")
        return self

    def tab_to(self, selector, max_tabs=40, backwards=False):
        """Press Tab (or Shift+Tab) until the focused element matches ``selector``."""
        key = "Shift+Tab" if backwards else "Tab"
        if self.matches(selector):
            return self.focused()
        previous, repeats = None, 0
        for _ in range(max_tabs):
            self.page.keyboard.press(key)
            info = self._note(selector)
            if self.matches(selector, info):
                return info
            # Date and time inputs take one Tab per part; anything else must move on.
            repeats = repeats + 1 if info["key"] == previous else 0
            limit = 6 if info["type"] in ("date", "time", "datetime-local") else 0
            if repeats > limit:
                raise KeyboardTrap(f"focus stays on {info['key']} after {repeats + 1} presses of {key}")
            previous = info["key"]
        raise KeyboardTrap(f"{selector} not reached in {max_tabs} presses of {key}; "
                           f"path: {self.path[-max_tabs:]}")

    def leaves_and_returns(self):
        """No trap here: Tab moves focus away and Shift+Tab brings it back."""
        here = self.focused()["key"]
        self.page.keyboard.press("Tab")
        away = self._note()["key"]
        assert away != here, f"Tab does not leave {here}"
        self.page.keyboard.press("Shift+Tab")
        back = self._note()["key"]
        assert back == here, f"Shift+Tab from {away} goes to {back}, not back to {here}"

    # -- entering values ---------------------------------------------------------------------
    def type(self, text, replace=True):
        """Type into the focused field, first selecting what is there."""
        if replace:
            self.page.keyboard.press("Control+a")
            self.page.keyboard.press("Delete")
        self.page.keyboard.type(text)

    def select(self, option_text, max_steps=80):
        """On a focused <select>: Home, then ArrowDown until the chosen option contains the text."""
        pattern = re.compile(option_text) if isinstance(option_text, re.Pattern) else None
        self.page.keyboard.press("Home")
        for _ in range(max_steps):
            current = self.page.evaluate(
                "() => { const s = document.activeElement; return s.selectedIndex < 0 ? '' : "
                "s.options[s.selectedIndex].text; }")
            if (pattern.search(current) if pattern else option_text in current):
                return current
            self.page.keyboard.press("ArrowDown")
        raise AssertionError(f"no option {option_text!r} reached by the arrow keys")

    def selected(self):
        """The text of the chosen option of the focused <select>."""
        return self.page.evaluate(
            "() => { const s = document.activeElement; return s.selectedIndex < 0 ? '' : "
            "s.options[s.selectedIndex].text; }")

    def radio(self, value, max_steps=10):
        """In a focused radio group: arrow keys until the radio with ``value`` is checked."""
        for _ in range(max_steps):
            info = self.focused()
            if info["value"] == value and info["checked"]:
                return
            self.page.keyboard.press("ArrowRight")
        raise AssertionError(f"radio {value!r} not reached by the arrow keys")

    def toggle(self, want=True):
        """Space on a focused checkbox until it is ``want``."""
        if self.focused()["checked"] != want:
            self.page.keyboard.press("Space")
        assert self.focused()["checked"] == want

    def press(self, key):
        self.page.keyboard.press(key)

    def submit_with(self, selector, max_tabs=40, key="Enter"):
        """Tab to the submit button and press Enter; the button's focus must show."""
        self.tab_to(selector, max_tabs=max_tabs)
        self.page.keyboard.press(key)

    def follow(self, selector, url, max_tabs=150):
        """Tab to a link, press Enter, wait for ``url``; the next page's keyboard, started."""
        self.tab_to(selector, max_tabs=max_tabs)
        self.page.keyboard.press("Enter")
        self.page.wait_for_url(url)
        return Keyboard(self.page).start()

    def lands_on(self, url):
        """Wait for the page a submitted form leads to; on a refusal, say what the page says."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        try:
            self.page.wait_for_url(url)
        except PlaywrightTimeout:
            problems = self.page.eval_on_selector_all(
                "[role=alert], .error, .flash", "els => els.map(e => e.textContent.trim())")
            raise AssertionError(f"the form did not lead to {url}: {problems}") from None

    def check_focus_seen(self):
        assert self.unseen == [], f"no visible focus indicator on: {self.unseen}"
