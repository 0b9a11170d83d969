"""Unbound extension objects; ``create_app`` binds them to the app."""
from flask_htmx import HTMX
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import MetaData

#: Constraint names are predictable so migrations can name what they drop.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=NAMING_CONVENTION))
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
htmx = HTMX()


def bind_key(silo):
    """The Flask-SQLAlchemy bind key of ``silo`` ("center", "hospital" or "ems"): the center is
    the default bind (None)."""
    return None if silo == "center" else silo


def engine(silo):
    """The one way to read a silo's engine (``silo``: "center", "hospital" or "ems"); raises
    ``KeyError`` for another name.  Needs an app context."""
    return db.engines[bind_key(silo)]
