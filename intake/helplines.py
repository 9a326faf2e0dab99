"""National help lines shown beside the organisation's own contact, by page language.

Facts from outside: each line carries where it was read and the day it was checked, and is
marked for review by a person who calls or visits it (a wrong number sends a frightened
person nowhere). An instance may replace them: the config key `helplines_<language>` holds a
JSON list of the same shape, or `[]` to show none.
"""
import json

CHECKED = "2026-12-07"
REVIEW = "needs review: checked from public pages, not yet called or confirmed with each service"

HELPLINES = {
    "ja": [
        {"name": "性犯罪・性暴力被害者のためのワンストップ支援センター",
         "what": "性暴力の被害の相談 (24時間、無料、匿名で可)",
         "phone": "#8891", "alt_phone": "0120-8891-77", "url": "",
         "source": "https://www.gender.go.jp/policy/no_violence/seibouryoku/consult.html (内閣府男女共同参画局); "
                   "東京都の案内 https://www.soumu.metro.tokyo.lg.jp/10jinken/hanzai/onestop/index.html",
         "checked": CHECKED, "review": REVIEW},
        {"name": "Cure Time (キュアタイム)",
         "what": "性暴力についてのチャット相談 (内閣府、匿名で可、受付は曜日と時間が決まっています)",
         "phone": "", "url": "https://curetime.jp/",
         "source": "https://curetime.jp/ (内閣府の事業); 東京都の案内 (上と同じページ)",
         "checked": CHECKED, "review": REVIEW},
        {"name": "24時間子供SOSダイヤル",
         "what": "18歳未満の人の相談 (24時間、無料)",
         "phone": "0120-0-78310", "url": "",
         "source": "https://www.mext.go.jp/ijime/detail/dial.htm (文部科学省)",
         "checked": CHECKED, "review": REVIEW},
        {"name": "警察の性犯罪被害相談電話",
         "what": "警察に相談したいとき (各都道府県警察につながります)",
         "phone": "#8103", "url": "",
         "source": "https://www.npa.go.jp/higaisya/seihanzai/seihanzai.html (警察庁)",
         "checked": CHECKED, "review": REVIEW},
    ],
    "en": [
        {"name": "One-stop support centres for victims of sexual violence (Japan)",
         "what": "Help after sexual violence, 24 hours, free, anonymous (mostly in Japanese)",
         "phone": "#8891", "alt_phone": "0120-8891-77", "url": "",
         "source": "https://www.gender.go.jp/policy/no_violence/seibouryoku/consult.html (Cabinet Office)",
         "checked": CHECKED, "review": REVIEW},
        {"name": "TELL Lifeline (Japan)",
         "what": "Counselling in English by phone and chat",
         "phone": "03-5774-0992", "url": "https://telljp.com/lifeline/",
         "source": "https://telljp.com/lifeline/",
         "checked": CHECKED, "review": REVIEW},
    ],
}


def helplines(settings, language: str) -> list[dict]:
    """The lines to show on a page in `language`: the instance's own list, else the defaults."""
    own = settings.extra.get(f"helplines_{language}")
    if own:
        try:
            found = json.loads(own) if isinstance(own, str) else own
            if isinstance(found, list):
                return [line for line in found if isinstance(line, dict) and line.get("name")]
        except ValueError:
            pass
    return HELPLINES.get(language, HELPLINES["en"])
