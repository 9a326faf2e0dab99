"""`kesu hash FILE...`: one JSON line per file, in the contract's shape (DESIGN.md §6.1)."""
import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pdqhash
from conftest import kesu_cli
from PIL import Image

SAMPLE = Path(__file__).resolve().parents[2] / "node_modules/@vladmandic/face-api/demo/sample2.jpg"


def reference_pdq(path):
    rgb = np.asarray(Image.open(path).convert("RGB"))
    bits, quality = pdqhash.compute(rgb)
    return "".join(f"{int(''.join('1' if b else '0' for b in bits[i:i + 4]), 2):x}" for i in range(0, 256, 4)), quality


def test_hash_prints_contract_lines(tmp_path):
    video = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "mandelbrot=size=320x240:rate=10", "-t", "3", "-pix_fmt", "yuv420p", str(video)], check=True)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    result = kesu_cli("hash", str(SAMPLE), str(video), str(text), str(tmp_path / "missing.png"), timeout=300)
    assert result.returncode == 0, result.stderr
    photo, clip, bogus, missing = [json.loads(line) for line in result.stdout.splitlines()]
    for line in (photo, clip, bogus, missing):
        assert set(line) >= {"file", "sha256", "md5", "pdq", "vpdq", "faces", "error"}

    data = SAMPLE.read_bytes()
    assert photo["sha256"] == hashlib.sha256(data).hexdigest() and photo["md5"] == hashlib.md5(data).hexdigest()
    assert photo["error"] is None
    full = next(p for p in photo["pdq"] if p["variant"] == "full")
    ref_hash, ref_quality = reference_pdq(SAMPLE)
    assert full["hash"] == ref_hash and full["quality"] == ref_quality
    assert {"full", "crop-1:1", "rot90", "flipy"} <= {p["variant"] for p in photo["pdq"]}
    assert len(photo["faces"]) >= 1
    face = photo["faces"][0]
    assert set(face["box"]) == {"x", "y", "width", "height"} and len(face["descriptor"]) == 128

    assert clip["error"] is None and clip["pdq"] == []
    assert [f[0] for f in clip["vpdq"]] == [0.0, 1.0, 2.0]
    assert all(len(f[2]) == 64 and 0 <= f[1] <= 100 for f in clip["vpdq"])

    assert bogus["error"] and bogus["sha256"] == hashlib.sha256(b"not an image").hexdigest()
    assert missing["error"].startswith("cannot read")
