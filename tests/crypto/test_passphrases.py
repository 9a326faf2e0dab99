"""Victim passphrases in her language: Japanese words on a Japanese page, >= 88 bits, no
word from the filter lists, and forgiving to type (full-width, half-width, katakana, spaces)."""
import math
import re
import unicodedata

import pytest
from mnemonic import Mnemonic

from crypto import passphrases

HIRAGANA = re.compile(r"^[\u3041-\u309f]+$")


@pytest.mark.parametrize("language", ["ja", "en"])
def test_at_least_88_bits_from_the_filtered_list(language):
    chosen = passphrases.words(language)
    assert len(set(chosen)) == len(chosen) > 1900
    assert passphrases.word_count(language) * math.log2(len(chosen)) >= 88
    assert len(passphrases.generate(language).split("-")) == passphrases.word_count(language)


@pytest.mark.parametrize("language", ["ja", "en"])
def test_no_generated_passphrase_holds_a_filtered_word(language):
    unwanted = passphrases.filtered_words(language)
    # The filter names words that are really in the list: a typo would filter nothing.
    listed = {unicodedata.normalize("NFKC", w) for w in Mnemonic(passphrases.LANGUAGES[language]).wordlist}
    assert len(unwanted) >= 40 and unwanted <= listed
    seen = set()
    for _ in range(3000):
        words = passphrases.generate(language).split("-")
        assert not unwanted.intersection(words)
        seen.update(words)
    assert len(seen) > 1500            # the draw really covers the list, not a few words


def test_a_japanese_page_gets_hiragana_words():
    p = passphrases.generate("ja")
    assert all(HIRAGANA.match(w) for w in p.split("-")), p
    assert passphrases.normalize(p) == p
    assert passphrases.generate("en").isascii()
    assert passphrases.generate("xx").isascii()     # unknown language: English


def test_japanese_typing_is_forgiving():
    p = passphrases.generate("ja")
    words = p.split("-")
    as_katakana = " ".join("".join(chr(ord(c) + 0x60) if "\u3041" <= c <= "\u3096" else c for c in w) for w in words)
    assert passphrases.normalize(as_katakana) == p
    assert passphrases.normalize("　".join(words)) == p                       # ideographic spaces
    assert passphrases.normalize("・".join(words) + "。") == p
    assert passphrases.normalize(unicodedata.normalize("NFKD", p)) == p        # decomposed dakuten
    assert passphrases.normalize(_half_width_katakana(as_katakana)) == p       # ｱｲｺｸｼﾝ


def _half_width_katakana(text: str) -> str:
    """Full-width katakana to half-width (ｱｲｳ, ｶﾞ as two characters), as some keyboards type."""
    table = {unicodedata.normalize("NFKC", chr(code)): chr(code) for code in range(0xFF61, 0xFFA0)}
    out = []
    for ch in unicodedata.normalize("NFKD", text):
        if ch == "\u3099":
            out.append("\uff9e")
        elif ch == "\u309a":
            out.append("\uff9f")
        else:
            out.append(table.get(ch, ch))
    return "".join(out)
