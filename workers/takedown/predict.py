"""Will this site remove it, and how fast? Compliance prediction and the order of routes.

Two estimates, both from our own history of takedowns (never from content):

1. Whether a request is honoured: a hierarchical Beta-Binomial with partial pooling along
   the domain's path  site kind -> country -> hosting provider -> domain.  Each level's rate
   is shrunk toward its parent's estimate with a concentration m estimated from the data
   (empirical Bayes, method of moments over that level's groups), so a domain with two
   requests borrows from its hosting provider, a new hosting provider from its country, and
   so on up to the overall rate. Outcomes: removed = 1, partly removed = 0.5, still up or on
   hold after the deadline = 0; open requests do not count here.

2. How fast: a Kaplan-Meier estimate of the time from the first notice to removal, with
   open requests (and those that ended without removal) counted as censored at the time we
   last know of them. The curve comes from the most specific level of the path with enough
   removals (5), and is combined with (1) as a cure model:
       P(removed within t) = p_domain * F(t) / F(t_max)
   where F = 1 - S is the Kaplan-Meier curve of that level. Staff read it as
   "likely to remove: 82 % within 7 days".

Routes, in the recommended order: the site's administrator, its hosting provider, its
registrar, then a hotline, then a lawyer; search-engine delisting runs in parallel with the
first. For a minor the only route is a hotline, never the site.
"""
import logging
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import select

from store.models import Domain, Takedown, utcnow

log = logging.getLogger("kesu.predict")

ROUTES = ("site", "host", "registrar", "search_engine", "hotline", "lawyer")
PARALLEL = frozenset({"search_engine", "regulator"})    # beside the platform route, never instead of it
LEVELS = ("kind", "country", "hosting", "domain")        # general -> specific
OUTCOME = {"removed": 1.0, "partly_removed": 0.5, "still_up": 0.0, "on_hold": 0.0}
WITHIN_DAYS = 7
MIN_EVENTS_KM = 5
PRIOR = (1.0, 1.0)                                          # Beta(1, 1) above the overall rate
M_DEFAULT, M_MIN, M_MAX = 4.0, 0.5, 200.0
POOR_SITE = 0.2                                             # below this (with evidence) skip the site


# --- the two estimators (pure functions, tested on synthetic data) ------------------------------

def concentration(successes: np.ndarray, trials: np.ndarray) -> float:
    """Beta concentration m = alpha + beta of a level, by the method of moments.

    Between-group variance of the rates minus their expected binomial variance gives the
    variance of the true rates, tau^2 = p(1-p)/(m+1). Few groups or no spread: M_DEFAULT / M_MAX.
    """
    keep = trials >= 2
    s, n = successes[keep], trials[keep]
    if len(n) < 3:
        return M_DEFAULT
    rates = s / n
    p = s.sum() / n.sum()
    if p <= 0 or p >= 1:
        return M_MAX
    var = np.average((rates - p) ** 2, weights=n) * len(n) / (len(n) - 1)
    binomial = p * (1 - p) * np.mean(1.0 / n)
    tau2 = var - binomial
    if tau2 <= 1e-9:
        return M_MAX
    return float(np.clip(p * (1 - p) / tau2 - 1, M_MIN, M_MAX))


@dataclass
class Posterior:
    alpha: float
    beta: float
    n: float

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def interval(self, level: float = 0.9, draws: int = 4000) -> tuple[float, float]:
        rng = np.random.default_rng(0)
        x = rng.beta(self.alpha, self.beta, draws)
        lo = (1 - level) / 2
        return float(np.quantile(x, lo)), float(np.quantile(x, 1 - lo))


def pooled(path_counts: list[tuple[float, float, float]]) -> list[Posterior]:
    """Partial pooling down one path: [(successes, trials, m) per level, general first].

    Level k's prior is Beta(m_k * mu_{k-1}, m_k * (1 - mu_{k-1})), where mu_{k-1} is the
    posterior mean of the level above (the overall Beta(1,1)-smoothed rate at the top).
    """
    out = []
    mu = None
    for s, n, m in path_counts:
        if mu is None:
            a, b = PRIOR[0] + s, PRIOR[1] + n - s
        else:
            a, b = m * mu + s, m * (1 - mu) + n - s
        post = Posterior(a, b, n)
        out.append(post)
        mu = post.mean
    return out


def kaplan_meier(durations, events) -> tuple[np.ndarray, np.ndarray]:
    """(times, survival) at each distinct event time; censored entries leave the risk set after ties."""
    d = np.asarray(durations, float)
    e = np.asarray(events, bool)
    if len(d) == 0:
        return np.array([]), np.array([])
    times = np.unique(d[e])
    surv, s = [], 1.0
    for t in times:
        at_risk = np.sum(d >= t)
        died = np.sum((d == t) & e)
        if at_risk:
            s *= 1.0 - died / at_risk
        surv.append(s)
    return times, np.array(surv)


def survival_at(times, surv, t: float) -> float:
    if len(times) == 0:
        return 1.0
    i = np.searchsorted(times, t, side="right") - 1
    return 1.0 if i < 0 else float(surv[i])


def median_time(times, surv) -> float | None:
    below = np.nonzero(surv <= 0.5)[0]
    return float(times[below[0]]) if len(below) else None


# --- data ----------------------------------------------------------------------------------------

@dataclass
class History:
    """One row per requested takedown: the path attributes, outcome and timing."""
    domain: np.ndarray
    hosting: np.ndarray
    country: np.ndarray
    kind: np.ndarray
    route: np.ndarray
    outcome: np.ndarray        # 1, 0.5, 0, or nan (open)
    duration: np.ndarray       # days from first notice to removal or to censoring
    event: np.ndarray          # removed (True) or censored

    def column(self, level: str) -> np.ndarray:
        return getattr(self, level)


def load_history(session, now: datetime | None = None) -> History:
    now = now or utcnow()
    rows = session.execute(
        select(Takedown.domain_id, Domain.hosting, Domain.country, Domain.kind, Takedown.route, Takedown.status,
               Takedown.requested_at, Takedown.resolved_at, Takedown.checked_at, Takedown.deadline_at)
        .join(Domain, Domain.id == Takedown.domain_id)
        .where(Takedown.requested_at.is_not(None))).all()
    n = len(rows)
    cols = {k: np.empty(n, dtype=object) for k in ("domain", "hosting", "country", "kind", "route")}
    outcome = np.full(n, np.nan)
    duration = np.zeros(n)
    event = np.zeros(n, bool)
    for i, (dom, host, country, kind, route, status, req, res, _checked, deadline) in enumerate(rows):
        cols["domain"][i] = dom
        cols["hosting"][i] = (host or "").strip().lower() or None
        cols["country"][i] = country or None
        cols["kind"][i] = kind or None
        cols["route"][i] = route or "site"
        overdue = deadline is not None and deadline <= now
        if status in ("removed", "partly_removed") or (status in ("still_up", "on_hold") and overdue):
            outcome[i] = OUTCOME[status]
        if status == "removed" and res is not None:
            duration[i] = max((res - req).total_seconds(), 0) / 86400
            event[i] = True
        else:
            end = res if res is not None else now
            duration[i] = max((end - req).total_seconds(), 0) / 86400
    return History(**cols, outcome=outcome, duration=duration, event=event)


def _level_stats(h: History, level: str, mask: np.ndarray, route=None):
    """{group: (successes, trials)} and the level's concentration, over rows in mask with an outcome."""
    cache = h.__dict__.setdefault("_cache", {})
    if (level, route) in cache:
        return cache[(level, route)]
    keep = mask & ~np.isnan(h.outcome)
    groups: dict = {}
    for g, o in zip(h.column(level)[keep], h.outcome[keep]):
        if g is None:
            continue
        s, n = groups.get(g, (0.0, 0.0))
        groups[g] = (s + o, n + 1)
    if groups:
        arr = np.array(list(groups.values()))
        m = concentration(arr[:, 0], arr[:, 1])
    else:
        m = M_DEFAULT
    cache[(level, route)] = groups, m
    return groups, m


def estimate(h: History, path: dict, route: str | None = None, now: datetime | None = None) -> dict:
    """The prediction for one domain path {"kind", "country", "hosting", "domain"}, optionally for one route."""
    mask = np.ones(len(h.outcome), bool) if route is None else (h.route == route)
    valid = mask & ~np.isnan(h.outcome)
    total_s, total_n = float(np.nansum(h.outcome[valid])), float(valid.sum())
    path_counts = [(total_s, total_n, 0.0)]
    levels = {}
    for level in LEVELS:
        groups, m = _level_stats(h, level, mask, route)
        s, n = groups.get(path.get(level), (0.0, 0.0)) if path.get(level) is not None else (0.0, 0.0)
        path_counts.append((s, n, m))
        levels[level] = {"successes": s, "trials": n, "m": round(m, 3)}
    posts = pooled(path_counts)
    top = posts[-1]
    for level, post in zip(LEVELS, posts[1:]):
        levels[level]["mean"] = round(post.mean, 4)
    lo, hi = top.interval()

    # timing: the most specific level with enough removals
    km_level, times, surv = "all", *kaplan_meier(h.duration[mask], h.event[mask])
    for level in reversed(LEVELS):
        if path.get(level) is None:
            continue
        sel = mask & (h.column(level) == path[level])
        if h.event[sel].sum() >= MIN_EVENTS_KM:
            km_level, (times, surv) = level, kaplan_meier(h.duration[sel], h.event[sel])
            break
    f_max = 1 - (float(surv[-1]) if len(surv) else 1.0)
    f_within = 1 - survival_at(times, surv, WITHIN_DAYS)
    p_within = top.mean * (f_within / f_max) if f_max > 0 else None
    return {
        "p_remove": round(top.mean, 4), "interval": [round(lo, 4), round(hi, 4)], "n": int(levels["domain"]["trials"]),
        "within_days": WITHIN_DAYS, "p_within": None if p_within is None else round(p_within, 4),
        "median_days": median_time(times, surv), "km_level": km_level,
        "km": [[round(float(t), 3), round(float(s), 4)] for t, s in zip(times[:50], surv[:50])],
        "levels": levels, "route": route,
    }


def path_of(domain: Domain) -> dict:
    return {"kind": domain.kind or None, "country": domain.country or None,
            "hosting": (domain.hosting or "").strip().lower() or None, "domain": domain.id}


def predict_domain(session, domain: Domain, history: History | None = None, now=None) -> dict:
    h = history or load_history(session, now)
    path = path_of(domain)
    result = estimate(h, path, now=now)
    result["routes"] = {r: {k: v for k, v in estimate(h, path, route=r, now=now).items()
                            if k in ("p_remove", "n", "p_within")}
                        for r in ("site", "host", "registrar")}
    result["regimes"] = deadline_compliance(session, domain, now)
    result["updated"] = (now or utcnow()).isoformat(timespec="seconds")
    return result


def deadline_compliance(session, domain: Domain, now=None) -> dict:
    """Per regime this domain has had legal notices under: the chance it removes within the legal
    deadline, its own record (removed within / past the deadline, from workers.takedown.compliance)
    partially pooled toward every platform's record under that regime (Beta-Binomial, as above)."""
    from workers.takedown import compliance
    everywhere: dict[str, list] = {}
    for row in compliance.rows(session):
        everywhere.setdefault(row[0], []).append(row)
    kept: dict[str, dict] = {}                # withdrawn cases' counts (store.tally) join the regime's rate
    for regime_id, _domain, legal, n in compliance.kept_counts(session):
        kept.setdefault(regime_id, {})[legal] = kept.get(regime_id, {}).get(legal, 0) + n
    here = {}
    for row in compliance.rows(session, domain_id=domain.id):
        here.setdefault(row[0], []).append(row)
    out = {}
    for regime_id, mine in here.items():
        overall = compliance.summarise(everywhere.get(regime_id, []), now, kept.get(regime_id))
        own = compliance.summarise(mine, now)
        post = pooled([(overall["within"], overall["decided"], 0.0), (own["within"], own["decided"], M_DEFAULT)])[-1]
        lo, hi = post.interval()
        out[regime_id] = {"p_within": round(post.mean, 4), "interval": [round(lo, 4), round(hi, 4)],
                          "n": own["decided"], "n_all": overall["decided"], "median_hours": own["median_hours"]}
    return out


def update_domain(instance, domain_id: int) -> dict | None:
    """Recompute and store one domain's prediction (after each outcome)."""
    with instance.session() as s:
        domain = s.get(Domain, domain_id)
        if domain is None:
            return None
        domain.prediction = predict_domain(s, domain)
        return domain.prediction


def update_all(ref: str = "") -> int:
    """Scheduled job: refresh the prediction of every domain with history (daily)."""
    from workers.system.context import instance as current
    inst = current()
    with inst.session() as s:
        h = load_history(s)
        ids = sorted({int(d) for d in h.domain if d is not None})
        for domain in s.execute(select(Domain).where(Domain.id.in_(ids))).scalars():
            domain.prediction = predict_domain(s, domain, h)
    return len(ids)


# --- routes ----------------------------------------------------------------------------------------

def available_routes(domain: Domain | None) -> dict[str, bool]:
    contacts = (domain.contacts or {}) if domain else {}
    return {
        "site": bool(domain and (domain.contact_email or domain.contact_form or contacts.get("site", {}).get("emails")
                                 or contacts.get("site", {}).get("forms"))),
        "host": bool(contacts.get("host", {}).get("email")),
        "registrar": bool(contacts.get("registrar", {}).get("email")),
        "search_engine": True,
        "hotline": True,
        "lawyer": True,
    }


def recommend_routes(domain: Domain | None, category: str | None, prediction: dict | None = None) -> list[dict]:
    """The routes in the order to try, each {"route", "available", "parallel", "skip", "p_remove"}.

    Minor: the hotline only. Otherwise the standard order; the site's administrator is
    marked skip when its history shows it ignores requests (estimate below POOR_SITE with
    at least 3 outcomes of its own), so the first route becomes its hosting provider.
    """
    if category == "minor":
        return [{"route": "hotline", "available": True, "parallel": False, "skip": False, "p_remove": None}]
    avail = available_routes(domain)
    routes_pred = (prediction or {}).get("routes", {})
    out = []
    for route in ROUTES:
        p = routes_pred.get(route, {})
        skip = (route == "site" and p.get("n", 0) >= 3 and p.get("p_remove", 1) < POOR_SITE
                and (avail["host"] or avail["registrar"]))
        out.append({"route": route, "available": avail[route], "parallel": route in PARALLEL, "skip": bool(skip),
                    "p_remove": p.get("p_remove")})
    return out


def first_route(steps: list[dict]) -> str:
    for step in steps:
        if step["available"] and not step["parallel"] and not step["skip"]:
            return step["route"]
    return steps[0]["route"]


def next_route(steps: list[dict], current: str | None) -> str | None:
    """The route after `current` in the recommended order (the proposal once a deadline passes)."""
    order = [s["route"] for s in steps if s["available"] and not s["parallel"] and not s["skip"]]
    if current not in order:
        return order[0] if order else None
    i = order.index(current)
    return order[i + 1] if i + 1 < len(order) else None
