"""Hospital staff: request entry, tracking, awarding, preferred agencies."""
from flask import Blueprint, render_template

from ..auth.routes import roles_required

bp = Blueprint("hospital", __name__, url_prefix="/hospital")


@bp.route("/")
@roles_required("hospital")
def dashboard():
    return render_template("hospital/dashboard.html")
