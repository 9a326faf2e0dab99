"""Faces only where there are faces: the first pass (workers.signals.faces.face_proposals,
MTCNN's cascade, whose boxes seed dlib's landmarks) finds every face that HOG over the whole
picture finds, with the same descriptor, and a crawled JPEG decoded at a reduced scale reports
boxes in the full picture's pixels. bench/bench_face_detection.py measures the same on every
face photo available."""
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from workers.signals import faces
from workers.signals.images import PDQ_SIDE
from workers.signals.media import body_signals

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = sorted((ROOT / "node_modules/@vladmandic/face-api/demo").glob("sample*.jpg"))
needs_samples = pytest.mark.skipif(not SAMPLES, reason="the face-api sample photos are not installed")


def _box(f):
    b = f["box"]
    return b["x"], b["y"], b["width"], b["height"]


def _iou(a, b):
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return 0.0 if iw <= 0 or ih <= 0 else iw * ih / (a[2] * a[3] + b[2] * b[3] - iw * ih)


def _same_faces(full, fast):
    """Each face of the full path, found by the fast path: (IoU, descriptor distance)."""
    out = []
    for f in full:
        best = max(fast, key=lambda g: _iou(_box(f), _box(g)), default=None)
        assert best is not None and _iou(_box(f), _box(best)) >= 0.3, (_box(f), [_box(g) for g in fast])
        out.append(faces.face_distance(f["descriptor"], best["descriptor"]))
    return out


def _scene(seed, size=(1280, 960)):
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (160, 120), tuple(int(v) for v in rng.integers(0, 255, 3)))
    d = ImageDraw.Draw(img)
    for _ in range(30):
        x, y, w, h = (int(v) for v in rng.integers(0, 160, 4))
        d.rectangle([x, y, x + w // 3, y + h // 3], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return img.filter(ImageFilter.GaussianBlur(1)).resize(size, Image.BICUBIC)


@needs_samples
def test_first_pass_keeps_every_face_of_the_sample_photos():
    distances = []
    for path in SAMPLES:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        full = faces.describe_faces(rgb, detector="full")
        fast = faces.describe_faces(rgb)
        assert full, path.name
        distances += _same_faces(full, fast)
    assert len(distances) >= 15
    # The same face through both paths: HOG's box differs by a few pixels, and the descriptor
    # by dlib's landmark noise on such a shift (most faces a few hundredths; a half-turned
    # face more): far below the distance between two people (> 0.6).
    assert np.median(distances) < 0.06, distances


def _paste_faces(photo, face, placements):
    scene = _scene(3)
    for (x, y), face_px, angle in placements:
        s = face_px / face["box"]["width"]
        small = photo.resize((round(photo.width * s), round(photo.height * s)), Image.LANCZOS)
        fx, fy = face["box"]["x"] * s, face["box"]["y"] * s
        cut = small.crop((int(fx - face_px), int(fy - face_px), int(fx + 2 * face_px), int(fy + 2 * face_px)))
        mask = Image.new("L", cut.size, 255)
        if angle:
            cut, mask = cut.rotate(angle, Image.BICUBIC), mask.rotate(angle)
        scene.paste(cut, (x, y), mask)
    return np.asarray(scene)


@needs_samples
def test_small_and_turned_faces_on_a_larger_picture():
    photo = Image.open(SAMPLES[1]).convert("RGB")
    face = max(faces.describe_faces(np.asarray(photo), detector="full"), key=lambda f: f["box"]["width"])
    # A 48 px face and a 110 px face turned by 20 degrees: both paths find both.
    rgb = _paste_faces(photo, face, [((100, 120), 48, 0), ((700, 500), 110, 20)])
    full = faces.describe_faces(rgb, detector="full")
    fast = faces.describe_faces(rgb)
    assert len(full) == 2 and len(fast) == 2, ([_box(f) for f in full], [_box(f) for f in fast])
    assert max(_same_faces(full, fast)) < 0.15


def test_no_face_no_description():
    rgb = np.asarray(_scene(5))
    assert faces.describe_faces(rgb) == []
    assert faces.describe_faces(rgb, detector="full") == []


@needs_samples
def test_reduced_decode_reports_boxes_in_the_full_picture():
    photo = Image.open(SAMPLES[0]).convert("RGB")
    # Decoded at 1/8 for PDQ and the first pass; its faces (~100-200 px there) described
    # from a larger decode where they are DETAIL_FACE px or more.
    big = photo.resize((photo.width * 6, photo.height * 6), Image.BICUBIC)
    assert big.width >= 8 * PDQ_SIDE
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=90)
    got = body_signals(buf.getvalue())["faces"]
    want = faces.describe_faces(faces.to_rgb_array(big).copy())
    assert len(got) == len(want) >= 1
    distances = []
    for f in want:
        best = max(got, key=lambda g: _iou(_box(f), _box(g)))
        assert _iou(_box(f), _box(best)) >= 0.6, (_box(f), _box(best))
        distances.append(faces.face_distance(f["descriptor"], best["descriptor"]))
    # Found in a decode at 1/8 and described from a smaller decode than the reference's: the
    # box moves by a pixel or two, and the descriptor by dlib's landmark noise on that shift
    # and by the resampling (on this blurred 6x enlargement up to ~0.2 for one face; most far
    # less).
    assert np.median(distances) < 0.1, distances


@needs_samples
def test_a_larger_decode_that_fails_still_describes_the_faces():
    rgb = np.asarray(Image.open(SAMPLES[0]).convert("RGB").reduce(4))     # faces under DETAIL_FACE
    asked = []

    def refused(long_side):
        asked.append(long_side)
        return None
    got = faces.describe_faces(rgb, scale=0.25, detail=refused)
    assert asked and got == faces.describe_faces(rgb, scale=0.25)
