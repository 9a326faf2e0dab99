"""Every string the apps show has a Japanese translation."""
import subprocess
import sys
from pathlib import Path

from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]


def test_every_message_is_translated_to_japanese(tmp_path):
    pot = tmp_path / "messages.pot"
    subprocess.run([str(Path(sys.executable).with_name("pybabel")), "extract", "-F", "babel.cfg",
                    "-k", "_l", "-o", str(pot), "--ignore-dirs=.venv node_modules tests bench", "."],
                   cwd=ROOT, check=True, capture_output=True)
    with open(pot, "rb") as f:
        wanted = {m.id for m in read_po(f) if m.id}
    with open(ROOT / "translations/ja/LC_MESSAGES/messages.po", "rb") as f:
        ja = {m.id: m for m in read_po(f) if m.id}
    missing = sorted(str(i) for i in wanted if i not in ja or not ja[i].string or ja[i].fuzzy)
    assert not missing, f"untranslated (run scripts/i18n-update.sh, then translate): {missing[:20]}"
