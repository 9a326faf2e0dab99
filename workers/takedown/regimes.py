"""Legal regimes as data: one TOML file per regime in `regimes/` (beside `templates/`, where the
lawyer who reviews the notices finds both). Adding a regime is adding a file.

A file says where the regime applies (the service's country, a flag on its domain, the case's
category, the route), what a valid notice under it must carry (FIELDS below), the legal deadline
and how it is counted, the escalation routes once it passes, and the template per language that
the notice includes. Files are validated when loaded (pydantic): a bad file stops the start with
an error naming the file and the field. Facts come with their source and the date they were
checked, and every file is marked for a lawyer's review (docs/LEGAL.md).

The strongest regime is the one whose duty binds the platform most (a duty to remove before a
duty to decide before a shorter inquiry period: DUTY_ORDER), then the shortest deadline, then
the file's `strength`. The notice cites it and carries every field it requires; the others that
apply are named beside it.
"""
import tomllib
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from store.vocabulary import CATEGORIES, LANGUAGES
from web import ROOT, TEMPLATES

REGIMES_DIR = ROOT / "regimes"
DOMAIN_FLAGS = ("designated", "dsa", "take_it_down")        # columns of store.models.Domain
ESCALATION_TARGETS = ("regulator", "search_engine", "host", "registrar", "hotline")
DUTY_ORDER = {"remove": 0, "decide": 1, "inquiry": 2, "none": 3}

# What a valid notice may be required to carry: field -> (what it is, its label per language).
# The label is what the notice prints; render() refuses a notice whose text lacks the label of a
# field its regimes require (a template that forgot one is never sent half-valid).
FIELDS: dict[str, dict[str, str]] = {
    "location": {"what": "the URLs where the material is",
                 "en": "Where the material is (URLs)", "ja": "掲載されている場所（URL）"},
    "identification": {"what": "identification of the material",
                       "en": "What it is", "ja": "掲載されている情報"},
    "right": {"what": "the right infringed", "en": "Rights infringed", "ja": "侵害されたとする権利"},
    "reason": {"what": "why it infringes (a substantiated explanation)",
               "en": "Why", "ja": "権利が侵害されたとする理由"},
    "good_faith": {"what": "a statement of good-faith belief",
                   "en": "Statement of good faith", "ja": "誠実性の表明"},
    "signature": {"what": "the signature of the person depicted or of someone authorised to act for her, "
                          "with the basis of that authority",
                  "en": "Signature of the authorised representative", "ja": "代理人の署名"},
    "contact": {"what": "contact information of the sender", "en": "Contact information", "ja": "連絡先"},
    "notifier": {"what": "the notifier's name and e-mail address", "en": "Notifier", "ja": "通知者"},
    "accuracy": {"what": "a statement of accuracy", "en": "Statement of accuracy", "ja": "真実性の表明"},
}


class RegimeError(ValueError):
    """A regime file that cannot be used: the message names the file and what is wrong."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Text(_Strict):
    en: str = Field(min_length=1)
    ja: str = Field(min_length=1)

    def get(self, language: str) -> str:
        return self.ja if language == "ja" else self.en


class Coverage(_Strict):
    countries: list[str] = Field(min_length=1)          # the service's country (ISO 3166 alpha-2) or "*"
    domain_flag: Literal["designated", "dsa", "take_it_down"] | None = None
    categories: list[Literal[CATEGORIES]] = Field(min_length=1)
    routes: list[Literal["site", "host", "registrar"]] = ["site"]

    @field_validator("countries")
    @classmethod
    def _codes(cls, value):
        for c in value:
            if c != "*" and not (len(c) == 2 and c.isalpha() and c.isupper()):
                raise ValueError(f"country must be a two-letter upper-case code or '*': {c!r}")
        return value


class Deadline(_Strict):
    duty: Literal["remove", "decide", "inquiry", "none"]
    hours: int | None = Field(default=None, gt=0)       # None: the law gives no figure (say so)
    approximate: bool = False
    counted_from: Text                                   # how it is counted, in words


class Escalation(_Strict):
    target: Literal[ESCALATION_TARGETS]
    name: str = Field(min_length=1)
    url: str = ""
    note: Text | None = None


class Regime(_Strict):
    id: str
    name: Text
    jurisdiction: str = Field(min_length=2)
    law: Text                                            # the citation the notice prints
    status: Literal["in_force", "announced"]
    in_force_from: date | None = None
    source: str = Field(min_length=1)
    checked: date
    lawyer_review: Literal["pending", "done"]
    notice: bool = True                                  # False: the route is a report elsewhere (eSafety)
    strength: int = 0
    coverage: Coverage
    fields: list[Literal[tuple(FIELDS)]]
    deadline: Deadline
    escalation: list[Escalation] = []
    templates: dict[Literal[LANGUAGES], str]

    @model_validator(mode="after")
    def _complete(self):
        missing = [lang for lang in LANGUAGES if lang not in self.templates]
        if self.notice and missing:
            raise ValueError(f"templates: no template for {', '.join(missing)}")
        for lang, name in self.templates.items():
            if not (TEMPLATES / name).is_file():
                raise ValueError(f"templates.{lang}: {name} does not exist under templates/")
        if self.deadline.duty != "none" and self.deadline.hours is None and not self.deadline.approximate:
            raise ValueError("deadline: a duty without hours must say approximate = true (the figure is unknown)")
        return self

    # --- reading it -------------------------------------------------------------------------

    def covers(self, domain, category: str | None, route: str) -> bool:
        cov = self.coverage
        if route not in cov.routes or category not in cov.categories:
            return False
        country = ((domain.country if domain else "") or "").upper()
        if "*" not in cov.countries and country not in cov.countries:
            return False
        return cov.domain_flag is None or bool(domain is not None and getattr(domain, cov.domain_flag, False))

    @property
    def window(self) -> timedelta | None:
        return timedelta(hours=self.deadline.hours) if self.deadline.hours else None

    def rank(self) -> tuple:
        return (DUTY_ORDER[self.deadline.duty], self.deadline.hours or 10 ** 6, -self.strength, self.id)


def parse(path: Path) -> Regime:
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RegimeError(f"regime file {path.name}: cannot be read: {exc}") from exc
    if "id" in data and data["id"] != path.stem:
        raise RegimeError(f"regime file {path.name}: id {data['id']!r} differs from the file name")
    data.setdefault("id", path.stem)
    try:
        return Regime.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in exc.errors())
        raise RegimeError(f"regime file {path.name}: {problems}") from None


def load_all(folder: Path | None = None) -> dict[str, Regime]:
    """Every regime in the folder, validated; RegimeError on the first bad file."""
    folder = folder or REGIMES_DIR
    out = {}
    for path in sorted(folder.glob("*.toml")):
        regime = parse(path)
        out[regime.id] = regime
    if not out:
        raise RegimeError(f"no regime files in {folder}")
    return out


@lru_cache(maxsize=1)
def regimes() -> dict[str, Regime]:
    return load_all()


def get(regime_id: str | None) -> Regime | None:
    return regimes().get(regime_id) if regime_id else None


def applicable(domain, category: str | None, route: str) -> list[Regime]:
    """The regimes that cover a notice of this category to this route at this domain, strongest first."""
    return sorted((r for r in regimes().values() if r.covers(domain, category, route)), key=Regime.rank)


def strongest_notice_regime(domain, category: str | None, route: str) -> tuple[Regime | None, list[Regime]]:
    """(the regime the notice cites, every applicable one whose notice goes to the platform)."""
    found = [r for r in applicable(domain, category, route) if r.notice]
    return (found[0] if found else None), found


def reports(domain, category: str | None) -> list[Regime]:
    """Regimes whose route is a report to a regulator rather than a notice (eSafety)."""
    return [r for r in regimes().values() if not r.notice and r.covers(domain, category, "site")]


def required(found: list[Regime]) -> list[str]:
    """Every field any of these regimes requires, in FIELDS order."""
    wanted = {f for r in found for f in r.fields}
    return [f for f in FIELDS if f in wanted]
