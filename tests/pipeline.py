"""A victim's registration the real way: signals sealed to the org key, then taken in."""
import json

from crypto.sealing import seal, unb64
from store.cases import create_case
from workers.images import image_signals
from workers.takein import take_in_pending


def register(instance, image: bytes, category: str = "adult_ncii") -> tuple[int, str, str]:
    """(case id, case number, passphrase) of a new case holding the image's signals."""
    sig = image_signals(image)
    payload = {"version": 1, "category": category, "language": "ja", "known_urls": [], "contact": None,
               "consent": {"takedown": True, "hotline": False, "share_hashes": False, "at": "2026-11-01"},
               "signals": [{"type": "sha256", "hash": sig["sha256"], "item": "p1"},
                           {"type": "md5", "hash": sig["md5"], "item": "p1"}]
               + [{"type": "pdq", "hash": p["hash"], "quality": p["quality"], "item": "p1", "variant": p["variant"]}
                  for p in sig["pdq"]],
               "items": [{"item": "p1", "kind": "photo", "label": "photo 1"}]}
    key_id, public = instance.public_key()
    number, passphrase, case_id, _ = create_case(instance, key_id, seal(unb64(public), json.dumps(payload).encode()))
    take_in_pending(instance)
    return case_id, number, passphrase
