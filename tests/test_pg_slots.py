"""The shared-server wait of tests/pg_slots.py: a full server is waited for, bounded; any other
connection error is raised at once."""
import types

import pytest

from tests import pg_slots


class Refusal(Exception):
    """Stands for the driver's OperationalError."""


def dialect_refusing(messages):
    """A dialect whose ``connect`` fails with each of ``messages`` in turn, then connects."""
    attempts = []

    def connect(*args, **kwargs):
        attempts.append(args)
        if len(attempts) <= len(messages):
            raise Refusal(messages[len(attempts) - 1])
        return "connection"

    return types.SimpleNamespace(connect=connect, loaded_dbapi=types.SimpleNamespace(OperationalError=Refusal)), attempts


def test_a_full_server_is_waited_for(monkeypatch):
    monkeypatch.setattr(pg_slots, "SLOT_POLL_SECONDS", 0)
    dialect, attempts = dialect_refusing(['FATAL:  sorry, too many clients already',
                                          'FATAL:  too many connections for role "x"'])
    assert pg_slots._connect_when_a_slot_is_free(dialect, None, ("dsn",), {}) == "connection"
    assert len(attempts) == 3


def test_other_refusals_and_a_server_full_for_too_long_are_raised(monkeypatch):
    monkeypatch.setattr(pg_slots, "SLOT_POLL_SECONDS", 0)
    dialect, attempts = dialect_refusing(['FATAL:  database "x" does not exist'])
    with pytest.raises(Refusal, match="does not exist"):
        pg_slots._connect_when_a_slot_is_free(dialect, None, (), {})
    assert len(attempts) == 1
    monkeypatch.setattr(pg_slots, "SLOT_WAIT_SECONDS", 0)
    dialect, attempts = dialect_refusing(["FATAL:  sorry, too many clients already"] * 5)
    with pytest.raises(Refusal, match="too many clients"):
        pg_slots._connect_when_a_slot_is_free(dialect, None, (), {})
    assert len(attempts) == 1
