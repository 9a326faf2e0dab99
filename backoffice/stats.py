"""Statistics: per year, requests and what became of them; by category and by domain; CSV.

Counts only: no case, no URL, no victim. "Requests" are takedowns (one URL of one case) made
that year; their outcome is the takedown's current status: "requested" (a notice went out, no
answer yet) and "ongoing" (not requested yet) are counted apart, as staff read them.
A withdrawn case's takedowns are deleted with it; `store.tally.tally()`,
called by the withdrawal just before, keeps their counts in takedown_tallies, which the statistics add in.
"""
import csv
import io
from datetime import datetime

from flask import Blueprint, Response, jsonify, render_template, request
from flask_babel import gettext as _
from sqlalchemy import extract, func, select

from backoffice import current_instance, login_required
from store.models import Case, Domain, Takedown, TakedownTally
from store.tally import LEGAL_OUTCOMES
from workers.takedown import compliance

bp = Blueprint("stats", __name__, url_prefix="/stats")

OUTCOMES = ("removed", "partly_removed", "still_up", "on_hold", "requested", "ongoing")
_FOLD: dict[str, str] = {}


def _blank() -> dict:
    return {"requests": 0, **{k: 0 for k in OUTCOMES}}


def _finish(row: dict) -> dict:
    n = row["requests"]
    row["percent"] = {k: (round(100.0 * row[k] / n, 1) if n else 0.0) for k in OUTCOMES}
    return row


def compute(session, year: int | None = None, top_domains: int = 20) -> dict:
    """{"years": [{year, requests, removed..., percent}], "year": y, "by_category": [...], "by_domain": [...]}"""
    y = extract("year", Takedown.created_at)
    years: dict[int, dict] = {}
    live = session.execute(select(y, Takedown.status, func.count()).group_by(y, Takedown.status)).all()
    kept = session.execute(select(TakedownTally.year, TakedownTally.status, func.sum(TakedownTally.count))
                           .group_by(TakedownTally.year, TakedownTally.status)).all()
    for yr, status, n in [*live, *kept]:
        row = years.setdefault(int(yr), {"year": int(yr), **_blank()})
        row["requests"] += int(n)
        row[_FOLD.get(status, status if status in OUTCOMES else "ongoing")] += int(n)
    year_list = [_finish(years[k]) for k in sorted(years)]
    chosen = year if year is not None else (year_list[-1]["year"] if year_list else datetime.now().year)

    def grouped(key_col, label_join, tally_col):
        stmt = select(key_col, Takedown.status, func.count()).where(y == chosen)
        stmt = stmt.join(*label_join, isouter=True)
        rows = session.execute(stmt.group_by(key_col, Takedown.status)).all()
        rows += session.execute(select(tally_col, TakedownTally.status, func.sum(TakedownTally.count))
                                .where(TakedownTally.year == chosen)
                                .group_by(tally_col, TakedownTally.status)).all()
        out: dict = {}
        for key, status, n in rows:
            row = out.setdefault(key or None, _blank())
            row["requests"] += int(n)
            row[_FOLD.get(status, status if status in OUTCOMES else "ongoing")] += int(n)
        return out

    cats = grouped(Case.category, (Case, Case.id == Takedown.case_id), TakedownTally.category)
    by_category = [_finish({"category": k or "unknown", **v}) for k, v in sorted(cats.items(), key=lambda kv: -kv[1]["requests"])]
    doms = grouped(Domain.domain, (Domain, Domain.id == Takedown.domain_id), TakedownTally.domain)
    by_domain = [_finish({"domain": k or "(unknown)", **v})
                 for k, v in sorted(doms.items(), key=lambda kv: (-kv[1]["requests"], kv[0] or ""))[:top_domains]]
    return {"years": year_list, "year": chosen, "by_category": by_category, "by_domain": by_domain,
            "outcomes": list(OUTCOMES), "by_regime": compliance.by_regime(session, chosen)}


def to_csv(data: dict) -> str:
    """Three tables in one file (section, key, requests, each outcome and its percentage)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    head = ["section", "key", "requests"] + [c for k in OUTCOMES for c in (k, k + "_pct")]
    w.writerow(head)

    def emit(section, key, row):
        w.writerow([section, key, row["requests"]] + [v for k in OUTCOMES for v in (row[k], row["percent"][k])])

    for row in data["years"]:
        emit("year", row["year"], row)
    for row in data["by_category"]:
        emit(f"category {data['year']}", row["category"], row)
    for row in data["by_domain"]:
        emit(f"domain {data['year']}", row["domain"], row)
    # per legal regime and platform: removed within / after the deadline, overdue, pending
    w.writerow([])
    w.writerow(["section", "regime", "platform", "requests", *LEGAL_OUTCOMES, "share_within", "median_hours"])
    for row in data.get("by_regime", []):
        w.writerow([f"regime {data['year']}", row["regime"], row["platform"] or "*", row["requests"],
                    *(row[k] for k in LEGAL_OUTCOMES), "" if row["share_within"] is None else row["share_within"],
                    "" if row["median_hours"] is None else row["median_hours"]])
    return buf.getvalue()


def outcome_labels() -> dict:
    return {"removed": _("Removed"), "partly_removed": _("Partly removed"), "still_up": _("Still up"),
            "on_hold": _("On hold"), "requested": _("Requested, no answer yet"), "ongoing": _("Not requested yet")}


def regime_labels() -> dict:
    return {"within": _("Removed within the deadline"), "after": _("Removed after the deadline"),
            "overdue": _("Still up past the deadline"), "pending": _("Deadline not reached")}


def _label_regimes(data: dict) -> None:
    from backoffice.takedown import regime_name
    for row in data["by_regime"]:
        row["regime_label"] = regime_name(row["regime"])


def _year_arg():
    value = request.args.get("year", type=int)
    return value if value and 1990 < value < 3000 else None


@bp.route("/")
@login_required()
def index():
    with current_instance().session() as s:
        data = compute(s, _year_arg())
    from backoffice import category_label
    for row in data["by_category"]:
        row["label"] = category_label(row["category"])
    _label_regimes(data)
    return render_template("backoffice/stats.html", data=data, labels=outcome_labels(),
                           regime_outcomes=LEGAL_OUTCOMES, regime_labels=regime_labels())


@bp.route("/data.json")
@login_required()
def data_json():
    with current_instance().session() as s:
        data = compute(s, _year_arg())
    data["labels"] = {**outcome_labels(), "requests": _("Requests")}
    from backoffice import category_label
    for row in data["by_category"]:
        row["label"] = category_label(row["category"])
    return jsonify(data)


@bp.route("/stats.csv")
@login_required()
def download():
    with current_instance().session() as s:
        data = compute(s, _year_arg())
    body = "\ufeff" + to_csv(data)          # BOM: Excel in Japan opens UTF-8 correctly
    return Response(body, mimetype="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="kesu-stats-{data["year"]}.csv"'})
