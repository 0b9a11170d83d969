"""Level of care against the patient's needs: the one table of rules, and its checks.

A request's level of care (BLS < ALS < CCT, :data:`dashboard.models.vocabulary.LEVELS`) must be at
least what each of its needs asks for.  :data:`CARE_RULES` is that table; the new-request and
edit forms show it to the nurse, and :func:`dashboard.services.trip_posting.post` and
:func:`dashboard.services.trip_posting.edit` refuse a request below it
(:class:`dashboard.services.trips.CareLevelRefused`, 400) unless the nurse overrides it with a
reason, which is kept on the request, written to its timeline and audited.

The values are common US inter-facility practice, the stricter choice where regions differ:

- **Ventilator → CCT.**  A patient on a mechanical ventilator needs a crew that manages it in
  motion (settings, alarms, a blocked tube); that is critical care transport, beyond the
  paramedic's scope in most regions (the National EMS Scope of Practice Model, NHTSA 2019,
  DOT HS 812 666, gives the paramedic no ventilator management beyond simple transport
  ventilators).  Some regions send an ALS crew with the hospital's respiratory therapist on
  board: that is what the override is for.
- **IV pump → ALS.**  A running infusion on a pump is monitored and stopped if it goes wrong;
  EMTs (BLS) may not manage IV lines at all, paramedics maintain infusions within their state's
  formulary.  Titrated vasoactive or sedation drips are critical care: the nurse chooses CCT
  (one box cannot tell the drip apart, so the rule asks for the level every pump needs).
- **Cardiac monitor → ALS.**  Rhythm interpretation and acting on it (defibrillation,
  pacing, drugs) is paramedic scope; an EMT may attach leads but not read them.
- **Oxygen above 15 L/min → CCT.**  Conventional devices (nasal cannula, non-rebreather mask)
  deliver up to 15 L/min and are within EMT scope at any flow up to that; more than that is
  high-flow delivery (heated high-flow nasal cannula), a critical care device.

Isolation is not a level rule: every level carries patients under contact, droplet, airborne
or enteric precautions with the matching protective equipment.
"""
from dataclasses import dataclass

from ..formfields import has_visible_text
from ..models.vocabulary import LEVEL_RANK, LEVELS

#: The longest override reason kept, in characters (as long as a cancel note).
OVERRIDE_REASON_MAX = 300
#: Highest oxygen flow (L/min) a conventional device gives: more is high-flow, a CCT need.
OXYGEN_CONVENTIONAL_MAX_LPM = 15


@dataclass(frozen=True)
class CareRule:
    """One row of the table: when ``need`` (a request column) is present, the request's level
    of care must be at least ``minimum``.  ``label`` names the need as the screens do,
    ``when`` says when it counts, ``why`` is the one-line reason shown to the nurse."""

    need: str
    label: str
    when: str
    minimum: str
    why: str

    def applies(self, needs):
        """Whether ``needs`` (a mapping of request columns) holds this need."""
        value = needs.get(self.need)
        if self.need == "oxygen_lpm":
            return (value or 0) > OXYGEN_CONVENTIONAL_MAX_LPM
        return bool(value)

    def message(self, level):
        """What a field says when this need is on a request of ``level``, e.g. "A ventilator
        needs CCT or higher; this request is BLS."."""
        return f"{self.label} needs {self.minimum} or higher; this request is {level}."


#: The rules, strictest first.  One table: forms, services, pages and the demo read it.
CARE_RULES = (
    CareRule("ventilator", "A ventilator", "on a ventilator", "CCT",
             "Managing a ventilator in motion is critical care."),
    CareRule("oxygen_lpm", f"Oxygen above {OXYGEN_CONVENTIONAL_MAX_LPM} L/min",
             f"more than {OXYGEN_CONVENTIONAL_MAX_LPM} L/min", "CCT",
             f"Above {OXYGEN_CONVENTIONAL_MAX_LPM} L/min is high-flow delivery, a critical care device."),
    CareRule("iv_pump", "An IV pump", "an infusion on a pump", "ALS",
             "Keeping an infusion running is paramedic scope; EMTs may not manage IV lines."),
    CareRule("cardiac_monitor", "A cardiac monitor", "rhythm monitoring", "ALS",
             "Reading and acting on a rhythm is paramedic scope."),
)
RULES_BY_NEED = {rule.need: rule for rule in CARE_RULES}


def needs_of(source):
    """``{column: value}`` of the needs the rules read, from a request or a mapping of fields."""
    if isinstance(source, dict):
        return {rule.need: source.get(rule.need) for rule in CARE_RULES}
    return {rule.need: getattr(source, rule.need) for rule in CARE_RULES}


def shortfalls(level, needs):
    """The rules ``needs`` (a request or a mapping of its columns) breaks at ``level`` (one of
    :data:`LEVELS`), in :data:`CARE_RULES` order; empty when the level covers every need.
    Raises ``ValueError`` for a level that is not one of :data:`LEVELS`."""
    if level not in LEVEL_RANK:
        raise ValueError(f"{level!r} is not a level of care")
    needs = needs_of(needs)
    return tuple(rule for rule in CARE_RULES
                 if rule.applies(needs) and LEVEL_RANK[rule.minimum] > LEVEL_RANK[level])


def required_level(needs):
    """The lowest level of care covering every need of ``needs`` (BLS when none asks more)."""
    needs = needs_of(needs)
    ranks = [LEVEL_RANK[rule.minimum] for rule in CARE_RULES if rule.applies(needs)]
    return LEVELS[max(ranks, default=0)]


def summary(level, rules):
    """One line for the timeline and the pages: "BLS with a ventilator (needs CCT), a cardiac
    monitor (needs ALS)"."""
    parts = [f"{rule.label[0].lower()}{rule.label[1:]} (needs {rule.minimum})" for rule in rules]
    return f"{level} with " + ", ".join(parts)


def override_rules(trip):
    """The rules a request's stored override covers (``care_override_needs``), in table order."""
    keys = set((trip.care_override_needs or "").split(","))
    return tuple(rule for rule in CARE_RULES if rule.need in keys)


def override_summary(trip):
    """What a request's override covers, for the pages ("" when it has none)."""
    if not trip.care_override_reason:
        return ""
    return summary(trip.level_of_care, override_rules(trip))


def clean_reason(reason):
    """An override reason as kept: one line, spaces collapsed (line and paragraph separators
    too); "" for none, and for a reason with nothing visible in it (only joiners, fillers or
    lone accents, :func:`dashboard.formfields.has_visible_text`)."""
    reason = " ".join((reason or "").split())
    return reason if has_visible_text(reason) else ""
