"""The alert tones: one short, distinct WAV per alert kind, written by ``flask medport alert-tones``
into ``static/alerts/`` (committed; the page plays them from there, nothing from elsewhere).

Each tone is two or three notes of a sine with a soft attack and release, 8 kHz, 8-bit mono,
under 0.4 s (about 3 KB).  The groups sound apart: EMS tones rise, hospital tones fall, center
tones alternate; within a group each kind has its own pitches.
"""
import math
import os
import wave

RATE = 8000
NOTE_SECONDS = 0.11
GAP_SECONDS = 0.02
#: kind -> the notes' frequencies (Hz).
TONES = {
    "ems.new_request": (660, 880, 1100),
    "ems.bid_awarded": (784, 1047),
    "ems.bid_not_awarded": (523, 587),
    "ems.trip_changed": (698, 932),
    "hospital.first_bid": (1175, 988),
    "hospital.closing_no_bid": (880, 659, 523),
    "hospital.center_award": (1319, 1047),
    "hospital.crew_en_route": (1047, 880),
    "hospital.crew_at_pickup": (988, 784),
    "hospital.crew_late": (740, 554, 440),
    "hospital.unfilled": (622, 466),
    "center.unfilled": (880, 660, 880),
    "center.at_risk": (988, 740, 988),
    "center.parked": (440, 550, 440),
    "center.silo_down": (392, 330, 392),
}


def samples(frequencies):
    """The 8-bit samples (0..255) of one tone: each note with a 10 ms attack and release."""
    out = bytearray()
    ramp = int(RATE * 0.01)
    per_note = int(RATE * NOTE_SECONDS)
    for frequency in frequencies:
        for i in range(per_note):
            envelope = min(1.0, i / ramp, (per_note - i) / ramp)
            value = 0.6 * envelope * math.sin(2 * math.pi * frequency * i / RATE)
            out.append(int(128 + 127 * value))
        out.extend(b"\x80" * int(RATE * GAP_SECONDS))
    return bytes(out)


def write_all(folder):
    """Write ``<kind>.wav`` for every kind of :data:`TONES` into ``folder``; returns the paths."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for kind, frequencies in TONES.items():
        path = os.path.join(folder, f"{kind}.wav")
        with wave.open(path, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(1)
            out.setframerate(RATE)
            out.writeframes(samples(frequencies))
        paths.append(path)
    return paths
