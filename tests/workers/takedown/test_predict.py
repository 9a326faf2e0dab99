"""Compliance prediction: Beta-Binomial partial pooling, Kaplan-Meier with censoring, route order."""
import re
from datetime import timedelta

import numpy as np
import pytest
from takedown_helpers import make_case, make_domain, make_takedown

from store.models import Domain, utcnow
from workers.takedown import predict


def test_kaplan_meier_matches_a_hand_computed_curve():
    times, surv = predict.kaplan_meier([1, 2, 2, 3, 4, 5], [1, 1, 0, 1, 0, 1])
    # t=1: 6 at risk, 1 event -> 5/6; t=2: 5 at risk, 1 event -> 5/6*4/5 = 2/3 (the censored 2 stays at risk at 2)
    # t=3: 3 at risk -> 2/3*2/3 = 4/9; t=5: 1 at risk -> 0
    assert times.tolist() == [1, 2, 3, 5]
    assert np.allclose(surv, [5 / 6, 2 / 3, 4 / 9, 0.0])
    assert predict.survival_at(times, surv, 0.5) == 1.0 and predict.survival_at(times, surv, 2.5) == pytest.approx(2 / 3)
    assert predict.median_time(times, surv) == 3


def test_open_requests_are_censored_not_failures():
    removed = [1.0, 2.0, 3.0, 5.0]
    # treating 4 open requests (2 days old) as failures would say 50 % removed; censored, they leave the risk set
    t_naive, s_naive = predict.kaplan_meier(removed + [100] * 4, [1] * 4 + [0] * 4)
    t_cens, s_cens = predict.kaplan_meier(removed + [2.0] * 4, [1] * 4 + [0] * 4)
    f_naive = 1 - predict.survival_at(t_naive, s_naive, 7)
    f_cens = 1 - predict.survival_at(t_cens, s_cens, 7)
    assert f_naive == pytest.approx(0.5)
    assert f_cens == pytest.approx(1.0)          # everyone still at risk after day 2 was removed by day 5


def test_concentration_recovers_the_spread_of_true_rates():
    rng = np.random.default_rng(1)
    for a, b in ((8.0, 2.0), (2.0, 2.0)):
        p = rng.beta(a, b, 400)
        n = rng.integers(20, 60, 400)
        s = rng.binomial(n, p)
        m = predict.concentration(s.astype(float), n.astype(float))
        assert 0.6 * (a + b) < m < 1.6 * (a + b), (a, b, m)
    assert predict.concentration(np.array([1.0]), np.array([2.0])) == predict.M_DEFAULT


def test_partial_pooling_borrows_from_the_parent_in_proportion_to_evidence():
    # a host that removes half the time; a domain with 2/2 removals and one with 40/40
    few = predict.pooled([(50, 100, 0), (50, 100, 4.0), (2, 2, 4.0)])[-1]
    many = predict.pooled([(50, 100, 0), (50, 100, 4.0), (40, 40, 4.0)])[-1]
    none = predict.pooled([(50, 100, 0), (50, 100, 4.0), (0, 0, 4.0)])[-1]
    assert none.mean == pytest.approx(0.5, abs=0.01)             # no data: the parent's rate
    assert 0.55 < few.mean < 0.75                               # a little evidence: pulled toward 0.5
    assert many.mean > 0.9                                      # much evidence: its own rate
    lo, hi = few.interval()
    lo2, hi2 = many.interval()
    assert hi - lo > hi2 - lo2                                  # and more certain with more data


def test_prediction_from_history_and_route_order(instance):
    now = utcnow()
    fast = make_domain(instance, "fast.example", hosting="Good Host", country="JP", kind="tube")
    slow = make_domain(instance, "slow.example", hosting="Bad Host", country="NL", kind="tube",
                       contacts={"host": {"email": "abuse@badhost.example"}})
    case = make_case(instance)
    for i in range(12):          # fast.example removes within 1-3 days
        make_takedown(instance, case, fast, f"https://fast.example/{i}", route="site", status="removed",
                      requested_at=now - timedelta(days=30), resolved_at=now - timedelta(days=30 - 1 - i % 3),
                      deadline_at=now - timedelta(days=28))
    for i in range(2):           # two open requests, one day old: censored
        make_takedown(instance, case, fast, f"https://fast.example/open{i}", route="site", status="requested",
                      requested_at=now - timedelta(days=1), deadline_at=now + timedelta(days=1))
    for i in range(6):           # slow.example ignores its mail
        make_takedown(instance, case, slow, f"https://slow.example/{i}", route="site", status="still_up",
                      requested_at=now - timedelta(days=30), deadline_at=now - timedelta(days=28))
    p_fast = predict.update_domain(instance, fast)
    p_slow = predict.update_domain(instance, slow)
    assert p_fast["levels"]["domain"]["trials"] == 12             # open requests are not outcomes
    assert p_fast["km_level"] == "domain" and p_fast["median_days"] <= 3
    assert p_fast["p_within"] > 0.7 and p_slow["p_remove"] < 0.3
    assert p_fast["p_remove"] > p_slow["p_remove"]
    with instance.session() as s:
        assert s.get(Domain, fast).prediction["p_within"] == p_fast["p_within"]
        fast_d, slow_d = s.get(Domain, fast), s.get(Domain, slow)
        steps_fast = predict.recommend_routes(fast_d, "adult_ncii", fast_d.prediction)
        steps_slow = predict.recommend_routes(slow_d, "adult_ncii", slow_d.prediction)
    assert [x["route"] for x in steps_fast] == list(predict.ROUTES)
    assert predict.first_route(steps_fast) == "site"
    assert [x["route"] for x in steps_fast if x["parallel"]] == ["search_engine"]
    assert predict.first_route(steps_slow) == "host"             # the site's history says: go to its host
    assert predict.next_route(steps_fast, "site") == "hotline"   # no host or registrar contact known
    assert predict.next_route(steps_slow, "host") == "hotline"
    assert predict.recommend_routes(fast_d, "minor") == [
        {"route": "hotline", "available": True, "parallel": False, "skip": False, "p_remove": None}]

    # the sentence staff read
    from backoffice import create_app
    from backoffice.takedown import prediction_text
    app = create_app(instance)
    with app.test_request_context("/?lang=en"):
        text = prediction_text(p_fast)
    assert re.fullmatch(r"Likely to remove: \d+ % within 7 days \(likely between \d+ and \d+ %\); "
                        r"\d+ earlier request\(s\) to this site", text), text
    # one success is not a rate: with little history the sentence says so
    little = {**p_fast, "levels": {k: {**v, "trials": 1} for k, v in p_fast["levels"].items()}}
    with app.test_request_context("/?lang=en"):
        assert prediction_text(little) == "Too little history to predict yet (1 finished request(s) so far)"



