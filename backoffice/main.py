"""The back office's front page."""
from flask import Blueprint, g, render_template
from sqlalchemy import func, select

from backoffice import current_instance, login_required
from store.models import Case, Match, Takedown
from workers.takedown import escalation

bp = Blueprint("main", __name__)


@bp.route("/")
@login_required()
def home():
    with current_instance().session() as s:
        counts = {
            "cases": s.execute(select(func.count()).select_from(Case).where(Case.status != "withdrawn", Case.bank.is_(None))).scalar(),
            "to_review": s.execute(select(func.count()).select_from(Match).where(Match.state == "new")).scalar(),
            "takedowns": s.execute(select(func.count()).select_from(Takedown)).scalar(),
            "overdue": escalation.overdue_count(s),
        }
    return render_template("backoffice/home.html", staff=g.staff, counts=counts)
