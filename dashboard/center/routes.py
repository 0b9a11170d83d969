"""Transport-center coordinators and administrators: oversight, intervention, administration."""
from flask import Blueprint, render_template

from ..auth.routes import roles_required

bp = Blueprint("center", __name__, url_prefix="/center")


@bp.route("/")
@roles_required("coordinator", "admin")
def board():
    return render_template("center/board.html")
