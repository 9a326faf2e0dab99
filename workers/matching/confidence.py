"""Calibrated confidence: the probability that a (case, media) pair is a true match.

The evidence of a pair is every candidate the indexes found for it (one per kind): PDQ
distance, exact file hash, vPDQ frame shares, face distance and how many of the case's
registered faces agree, plus the history of the media's domain (how often staff confirmed
matches there before). A logistic regression turns it into a probability.

Before staff have decided anything, the weights are a hand-set prior (PRIOR below, chosen
so that an exact file hash or a near-identical PDQ reads >= 0.95, a PDQ at the threshold
about 0.5, a face alone well below 0.95). Staff decisions (Match.state confirmed/rejected)
retrain it: a maximum a posteriori fit with a Gaussian prior centred on PRIOR (Newton's
method), so a handful of decisions nudges the model and many decisions outweigh the prior.
`calibration()` reports reliability bins and the Brier score of the fitted model (k-fold
when there is enough data, so the figures are not measured on what the model learned from).

>= FLAG_AT is flagged in the review queue.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FLAG_AT = 0.95
PDQ_SCALE = 32.0          # PDQ distance in bits; 31 is the threshold
FACE_SCALE = 0.52         # workers.matching.index.FACE_THRESHOLD

MAX_FACES_AGREEING = 10
FACE_RARITY_DECADES = 4.0  # "closer than 99.99 % of other faces" gives the full face_rarity

FEATURES = ("bias", "exact", "pdq_has", "pdq_sim", "vpdq_share", "face_has", "face_sim", "faces_log", "domain",
            "face_rarity")
PRIOR = np.array([-3.0, 8.0, 3.0, 4.5, 7.0, 1.0, 2.0, 0.8, 1.0, 1.0])
PRIOR_STRENGTH = 1.0      # precision of the Gaussian prior on each weight


def features(evidence: list[dict], domain_logit: float = 0.0) -> np.ndarray:
    """One feature row from a pair's candidates (dicts with kind, distance and their evidence)."""
    x = np.zeros(len(FEATURES))
    x[0] = 1.0
    for c in evidence:
        kind, d = c.get("kind"), float(c.get("distance", 0.0))
        if kind in ("sha256", "md5"):
            x[1] = 1.0
        elif kind in ("pdq", "frame"):         # a frame: PDQ between a still and a video frame
            x[2] = 1.0
            x[3] = max(x[3], max(0.0, 1.0 - d / PDQ_SCALE))
        elif kind == "vpdq":
            share = min(float(c.get("query_share", 0.8)), float(c.get("target_share", 0.8)))
            x[4] = max(x[4], share)
        elif kind == "face":
            x[5] = 1.0
            x[6] = max(x[6], max(0.0, 1.0 - d / FACE_SCALE))
            # at most 10 agreeing faces count: with the rarity, a face alone stays below FLAG_AT
            x[7] = max(x[7], math.log1p(min(MAX_FACES_AGREEING, int(c.get("faces_agreeing", 1)))))
            x[9] = max(x[9], face_rarity(c))
    x[8] = domain_logit
    return x


def face_rarity(candidate: dict) -> float:
    """0..1: how few other people's crawled faces are this close to her face (the cohort rank,
    workers.matching.index.FaceCohort). A face that resembles many strangers scores low, so its
    candidates fall below better ones; 0 while the cohort is too small to tell."""
    closer = candidate.get("face_closer")
    if closer is None:
        return 0.0
    n = max(1, int(candidate.get("cohort", 1)))
    share = max(1.0 - float(closer), 1.0 / (n + 1))      # no share below what the cohort can see
    return min(1.0, -math.log10(share) / FACE_RARITY_DECADES)


def domain_logit(confirmed: int, rejected: int) -> float:
    """Smoothed log-odds of staff confirming a match on this domain (0 when unknown)."""
    return math.log((confirmed + 1) / (rejected + 1))


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


@dataclass
class Model:
    weights: np.ndarray = field(default_factory=lambda: PRIOR.copy())
    trained_on: int = 0

    def predict(self, X) -> np.ndarray:
        X = np.atleast_2d(np.asarray(X, dtype=float))
        return _sigmoid(X @ self.weights)

    def confidence(self, evidence: list[dict], domain_logit: float = 0.0) -> float:
        return float(self.predict(features(evidence, domain_logit))[0])

    def to_json(self) -> dict:
        return {"features": list(FEATURES), "weights": self.weights.tolist(), "trained_on": self.trained_on}

    @classmethod
    def from_json(cls, data: dict) -> "Model":
        if list(data.get("features", [])) != list(FEATURES):
            return cls()
        return cls(np.asarray(data["weights"], dtype=float), int(data.get("trained_on", 0)))

    def save(self, path: Path) -> None:
        path = Path(path)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json()))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Model":
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError):
            return cls()


def fit(X, y, prior: np.ndarray = PRIOR, strength: float = PRIOR_STRENGTH, iterations: int = 50) -> Model:
    """MAP logistic regression: log-likelihood + Gaussian prior N(prior, 1/strength) (Newton)."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    w = prior.astype(float).copy()
    if len(X) == 0:
        return Model(w, 0)
    eye = np.eye(len(w)) * strength

    def loss(v):
        z = X @ v
        return float(np.sum(np.logaddexp(0, z) - y * z) + 0.5 * strength * np.sum((v - prior) ** 2))

    current = loss(w)
    for _ in range(iterations):
        p = _sigmoid(X @ w)
        grad = X.T @ (p - y) + strength * (w - prior)
        hess = (X * (p * (1 - p))[:, None]).T @ X + eye
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-6:                       # backtracking: Newton may overshoot far from the optimum
            candidate = w - t * step
            value = loss(candidate)
            if value <= current:
                break
            t /= 2
        else:
            break
        w, improvement, current = candidate, current - value, value
        if improvement < 1e-10:
            break
    return Model(w, len(X))


def reliability(p, y, bins: int = 10) -> dict:
    """Reliability bins (count, mean predicted, observed rate) and the Brier score."""
    p = np.asarray(p, dtype=float)
    y = np.asarray(y, dtype=float)
    out = []
    edges = np.linspace(0, 1, bins + 1)
    for i in range(bins):
        sel = (p >= edges[i]) & ((p < edges[i + 1]) if i < bins - 1 else (p <= 1))
        if sel.any():
            out.append({"from": round(edges[i], 2), "to": round(edges[i + 1], 2), "count": int(sel.sum()),
                        "predicted": round(float(p[sel].mean()), 4), "observed": round(float(y[sel].mean()), 4)})
    brier = float(np.mean((p - y) ** 2)) if len(p) else None
    # Expected calibration error: count-weighted gap between predicted and observed.
    ece = (sum(b["count"] * abs(b["predicted"] - b["observed"]) for b in out) / len(p)) if len(p) else None
    return {"bins": out, "brier": brier, "ece": ece, "n": int(len(p))}


def calibration(X, y, folds: int = 5, seed: int = 0) -> dict:
    """Held-out reliability of the fitted model (k-fold when >= 20 labels, else in-sample)."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(X) < 20:
        return {**reliability(fit(X, y).predict(X) if len(X) else [], y), "method": "in-sample"}
    order = np.random.default_rng(seed).permutation(len(X))
    p = np.zeros(len(X))
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        p[test] = fit(X[train], y[train]).predict(X[test])
    return {**reliability(p, y), "method": f"{folds}-fold", "prior_brier": reliability(Model().predict(X), y)["brier"]}
