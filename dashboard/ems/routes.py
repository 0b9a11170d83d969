"""EMS dispatchers and crews: open-request board, bids, trips, units, routes."""
from flask import Blueprint, render_template

from ..auth.routes import roles_required

bp = Blueprint("ems", __name__, url_prefix="/ems")


@bp.route("/")
@roles_required("ems")
def board():
    return render_template("ems/board.html")
