"""Seed data, apart from the domain logic: the demo region a first run starts with
(``demo.seed``, ``flask medport seed-demo``) and a region's years of generated history for
benchmarks (``scale.generate``, ``flask medport seed-scale``).

``region`` holds the demo's fixed facts, ``bookings`` the rules that keep its units' shifts
possible.  These modules write the three silos themselves and commit per silo; of the
dashboard, only the ``flask medport`` commands import them.
"""
