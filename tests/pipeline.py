"""What several tests need: generated photos, and a victim's registration the real way
(signals sealed to the org key by create_case, then taken in)."""
import io
import json

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from crypto.sealing import seal, unb64
from store.cases import create_case
from workers.cases.takein import take_in_pending
from workers.signals.images import image_signals


def picture(seed: int, size=(360, 280)) -> bytes:
    """An ordinary generated photo (shapes on a colour, slightly blurred), as JPEG."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 255, 3)))
    d = ImageDraw.Draw(img)
    for _ in range(25):
        x, y = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        w, h = int(rng.integers(20, 150)), int(rng.integers(20, 150))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x, y, x + w, y + h],
                                                           fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    buf = io.BytesIO()
    img.filter(ImageFilter.GaussianBlur(1)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def payload(image: bytes, category: str = "adult_ncii") -> dict:
    """The §6.3 plaintext a browser would seal for one photo."""
    sig = image_signals(image)
    return {"version": 1, "category": category, "language": "ja", "known_urls": [], "contact": None,
            "consent": {"takedown": True, "hotline": False, "share_hashes": False, "at": "2026-11-01"},
            "signals": [{"type": "sha256", "hash": sig["sha256"], "item": "p1"},
                        {"type": "md5", "hash": sig["md5"], "item": "p1"}]
            + [{"type": "pdq", "hash": p["hash"], "quality": p["quality"], "item": "p1", "variant": p["variant"]}
               for p in sig["pdq"]],
            "items": [{"item": "p1", "kind": "photo", "label": "photo 1"}]}


def submit(instance, image: bytes, category: str = "adult_ncii") -> tuple[str, str, int, int]:
    """A sealed submission waiting for take-in: (case number, passphrase, case id, submission id)."""
    key_id, public = instance.public_key()
    return create_case(instance, key_id, seal(unb64(public), json.dumps(payload(image, category)).encode()))


def register(instance, image: bytes, category: str = "adult_ncii") -> tuple[int, str, str]:
    """(case id, case number, passphrase) of a new case holding the image's signals, taken in."""
    number, passphrase, case_id, _ = submit(instance, image, category)
    assert take_in_pending(instance, notify=False) == 1
    return case_id, number, passphrase
