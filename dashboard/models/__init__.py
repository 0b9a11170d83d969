"""Models of the three silos, one module each; imported here so metadata is complete."""
from . import center, ems, hospital, outbox  # noqa: F401
from .base import utcnow  # noqa: F401
