"""The demo region's fixed facts: hospitals, agencies and their units, preferred agencies,
and the words the demo's requests are written with.

Plain data (tuples, lists, a dict); ``demo.seed`` reads it.  Coordinates are (latitude,
longitude) in degrees.
"""

HOSPITALS = [
    # name, code, slug, city, (lat, lon), extra facilities [(name, kind, city, lat, lon)]
    ("Altoona Regional Medical Center", "ALT", "altoona", "Altoona", (40.5187, -78.3947),
     [("Altoona Rehabilitation Pavilion", "rehabilitation", "Altoona", 40.5049, -78.4022)]),
    ("Mount Nittany Valley Hospital", "MNV", "mountnittany", "State College", (40.8020, -77.8600),
     [("Nittany Dialysis Center", "dialysis", "State College", 40.7934, -77.8719)]),
    ("Juniata Valley Medical Center", "JVM", "juniata", "Huntingdon", (40.4848, -78.0103),
     [("Juniata Valley Skilled Nursing", "nursing_home", "Huntingdon", 40.4901, -78.0212)]),
    ("Johnstown Memorial Hospital", "JMH", "johnstown", "Johnstown", (40.3267, -78.9220),
     [("Conemaugh Heart Institute", "specialty", "Johnstown", 40.3312, -78.9180),
      ("Johnstown Cancer Care Center", "oncology", "Johnstown", 40.3190, -78.9051)]),
    ("Bedford County Community Hospital", "BED", "bedford", "Everett", (40.0115, -78.3737),
     [("Bedford Manor Care Home", "nursing_home", "Bedford", 40.0187, -78.5039)]),
    ("Tyrone Area Hospital", "TYR", "tyrone", "Tyrone", (40.6706, -78.2386), []),
]

AGENCIES = [
    # name, code, slug, levels, (lat, lon), area, units [(number, level)]
    ("Altoona EMS", "AEMS", "altoonaems", "BLS,ALS,CCT", (40.5150, -78.4000), "Blair County",
     [("Medic 11", "ALS"), ("Medic 12", "ALS"), ("Ambulance 14", "BLS"), ("Ambulance 15", "BLS"), ("Critical 19", "CCT")]),
    ("Blair County Ambulance", "BCA", "blaircounty", "BLS,ALS", (40.4300, -78.4200), "Blair and Bedford counties",
     [("Unit 21", "BLS"), ("Unit 22", "BLS"), ("Medic 23", "ALS")]),
    ("Centre LifeLink", "CLL", "centrelifelink", "BLS,ALS", (40.7900, -77.8500), "Centre County",
     [("Medic 31", "ALS"), ("Medic 32", "ALS"), ("Ambulance 34", "BLS")]),
    ("Allegheny Critical Care Transport", "ACCT", "alleghenycct", "ALS,CCT", (40.4500, -78.3000), "Central Pennsylvania",
     [("Critical 41", "CCT"), ("Critical 42", "CCT"), ("Medic 43", "ALS")]),
    ("Huntingdon County Rescue", "HCR", "huntingdonrescue", "BLS", (40.4850, -78.0150), "Huntingdon County",
     [("Ambulance 51", "BLS"), ("Ambulance 52", "BLS")]),
    ("Cambria Medical Transport", "CMT", "cambriamedical", "BLS,ALS,CCT", (40.3300, -78.9100), "Cambria and Somerset counties",
     [("Ambulance 61", "BLS"), ("Medic 62", "ALS"), ("Critical 63", "CCT"), ("Ambulance 64", "BLS")]),
]

PREFERENCES = {
    "ALT": ["AEMS", "BCA", "ACCT"],
    "MNV": ["CLL", "ACCT"],
    "JVM": ["HCR", "AEMS"],
    "JMH": ["CMT", "ACCT"],
    "BED": ["BCA", "AEMS"],
    "TYR": ["AEMS", "CLL"],
}

#: The demo's one level of care override (a BLS request with a cardiac monitor).
DEMO_OVERRIDE_REASON = ("Telemetry only, no rhythm interpretation needed in transit; "
                        "cardiology agrees BLS, no ALS unit free before the dialysis slot")
PICKUP_LOCATIONS = ["4 West, room 412", "ICU bed 7", "ED bay 3", "3 North, room 318",
                    "Cardiac step-down 22", "Oncology 5B, room 510", "Rehab wing, room 104",
                    "Dialysis chair 6", "Main lobby", "Med-surg 2 East, room 221"]
OTHER_NEEDS = ["", "", "", "Hard of hearing", "Needs family member to ride along",
               "Fall risk", "Bring own wheelchair", "Oxygen concentrator at destination"]
