"""PDQ in the victim's browser (intake/static/js/pdq.js, photo.js) against the server
(workers/images.py on pdqhash, Meta's C++ reference).

The corpus is generated here: gradients, noise, text, shapes, the face-api sample photos and
their crops and resizes, sizes from 1x1 to 8000x6000, greyscale, palette, transparency,
EXIF-rotated JPEGs. Every file is decoded once by workers.signals.images.decode_image and the same
pixels go to pdq.js in Node (tests/js/pdq_cli.mjs, one Node process for all) and to pdqhash.
"""
import functools
import hashlib
import io
import json
import shutil
import struct
import subprocess
import time
import zlib
from collections import Counter

import numpy as np
import pytest
from conftest import ROOT, wait_for
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from workers.signals.images import (
    DIHEDRAL_VARIANTS,
    MAX_PIXELS,
    PDQ_SIDE,
    ImageError,
    center_crop,
    decode_image,
    decode_reduced,
    image_signals,
    pdq_crawled,
    pdq_dihedral,
    pdq_distance,
    pdq_hash,
    pdq_variants,
    trim_borders,
)

NODE = shutil.which("node")
FACES = sorted((ROOT / "node_modules/@vladmandic/face-api/demo").glob("sample*.jpg"))
VECTORS = ROOT / "tests" / "vectors" / "trim.json"
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed")

# Frames up to this many pixels also get the dihedral and variant comparisons.
DETAIL_MAX_PIXELS = 300_000


# --- the corpus ------------------------------------------------------------------------------

def _png(img):
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=0)
    return buf.getvalue()


def _jpeg(img, quality=90, **kw):
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, **kw)
    return buf.getvalue()


def _encode(img, fmt):
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


SMALL_SIZES = [(1, 1), (2, 3), (4, 4), (5, 5), (6, 7), (1, 100), (100, 1), (200, 5), (64, 63), (64, 64),
               (65, 65), (128, 64), (129, 127), (128, 128), (256, 255), (255, 257), (300, 200), (640, 480),
               (480, 640), (1000, 750)]


def _gradient(rng, w, h, kind):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    x /= max(1, w - 1)
    y /= max(1, h - 1)
    if kind == 0:
        t = x
    elif kind == 1:
        t = y
    elif kind == 2:
        t = (x + y) / 2
    else:
        t = np.hypot(x - 0.5, y - 0.5) * 1.4
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    a = c0 + (c1 - c0) * t[:, :, None]
    if kind >= 4:    # a wavy one: not a pure ramp
        a = a + 40 * np.sin(x * rng.uniform(3, 20))[:, :, None] * np.cos(y * rng.uniform(3, 20))[:, :, None]
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def _noise(rng, w, h, blur):
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    return img.filter(ImageFilter.GaussianBlur(blur)) if blur else img


def _text(rng, w, h, i):
    img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 256, 3)))
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=int(rng.integers(10, 60)))
    for line in range(int(rng.integers(1, 6))):
        d.text((int(rng.integers(0, w // 2)), int(rng.integers(0, h))), f"kesu {i} 消す {line} takedown",
               fill=tuple(int(v) for v in rng.integers(0, 256, 3)), font=font)
    return img


def _shapes(rng, w, h):
    img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 256, 3)))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 12))):
        box = sorted(rng.integers(0, w, 2).tolist()) + []
        ys = sorted(rng.integers(0, h, 2).tolist())
        xy = [box[0], ys[0], box[1], ys[1]]
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 4))
        if kind == 0:
            d.rectangle(xy, fill=colour)
        elif kind == 1:
            d.ellipse(xy, fill=colour)
        elif kind == 2:
            d.line(xy, fill=colour, width=int(rng.integers(1, 9)))
        else:
            pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(5)]
            d.polygon(pts, fill=colour)
    return img


@functools.lru_cache(maxsize=None)
def _face(n):
    img = Image.open(FACES[n]).convert("RGB")
    img.load()
    return img


# Stored pixels that display upright under each EXIF orientation (the inverse of Pillow's
# exif_transpose method for that orientation).
EXIF_STORE = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
              7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def exif_jpeg(upright, orientation, quality=92):
    method = EXIF_STORE[orientation]
    stored = upright.transpose(method) if method is not None else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _jpeg(stored, quality, exif=exif.tobytes())


def bordered(img, top, bottom, left, right, colour):
    out = Image.new("RGB", (img.width + left + right, img.height + top + bottom), colour)
    out.paste(img, (left, top))
    return out


def transparent(rng, w, h):
    a = np.zeros((h, w, 4), np.uint8)
    a[:, :, :3] = np.asarray(_shapes(rng, w, h))
    y, x = np.mgrid[0:h, 0:w]
    a[:, :, 3] = np.clip(255 * np.sin(x / max(1, w) * 3.1) * np.cos(y / max(1, h) * 2.0), 0, 255).astype(np.uint8)
    a[: h // 4, : w // 4, 3] = 0
    return Image.fromarray(a, "RGBA")


def build_corpus():
    """[(name, file bytes)]: every image is a file, decoded the way crawled media are."""
    rng = np.random.default_rng(20240611)
    items = []
    for i, (w, h) in enumerate(SMALL_SIZES):
        items.append((f"gradient-{w}x{h}", _png(_gradient(rng, w, h, i % 4))))
        items.append((f"wavy-{w}x{h}", _png(_gradient(rng, w, h, 4 + i % 4))))
        items.append((f"noise-{w}x{h}", _png(_noise(rng, w, h, 0))))
    for i in range(25):
        w, h = int(rng.integers(16, 900)), int(rng.integers(16, 900))
        items.append((f"blurred-noise-{i}", _png(_noise(rng, w, h, float(rng.uniform(0.5, 12))))))
    for i in range(30):
        w, h = int(rng.integers(80, 1000)), int(rng.integers(40, 700))
        items.append((f"text-{i}", _png(_text(rng, w, h, i)) if i % 3 else _jpeg(_text(rng, w, h, i), 85)))
    for i in range(35):
        w, h = int(rng.integers(8, 1200)), int(rng.integers(8, 1200))
        items.append((f"shapes-{i}", _png(_shapes(rng, w, h)) if i % 2 else _jpeg(_shapes(rng, w, h), 80)))
    for n, path in enumerate(FACES):
        face = _face(n)
        items.append((f"face-{n}", path.read_bytes()))
        w, h = face.size
        items.append((f"face-{n}-half", _jpeg(face.reduce(2))))
        items.append((f"face-{n}-tiny", _png(face.reduce(8).resize((37, 50), Image.BILINEAR))))
        items.append((f"face-{n}-up", _jpeg(face.reduce(5).resize((w * 2 // 7, h * 2 // 7), Image.BICUBIC), 85)))
        x0, y0 = int(rng.integers(0, w // 3)), int(rng.integers(0, h // 3))
        items.append((f"face-{n}-crop", _png(face.crop((x0, y0, x0 + w // 2, y0 + h // 2)))))
        items.append((f"face-{n}-q40", _jpeg(face, 40)))
        items.append((f"face-{n}-grey", _png(face.reduce(3).convert("L"))))
        items.append((f"face-{n}-palette", _png(face.reduce(4).quantize(64, Image.Quantize.FASTOCTREE))))
        items.append((f"face-{n}-border", _png(bordered(face.reduce(3), 20, 20, 20, 20, "white"))))
        items.append((f"face-{n}-letterbox", _jpeg(bordered(face.reduce(3), 40, 40, 0, 0, "black"))))
        items.append((f"face-{n}-exif{2 + n}", exif_jpeg(face.reduce(3), 2 + n)))
    small_face = _face(0).resize((320, 213))
    for o in (1, 7, 8):
        items.append((f"exif-{o}", exif_jpeg(small_face, o)))
    for i in range(10):
        w, h = int(rng.integers(5, 600)), int(rng.integers(5, 600))
        items.append((f"rgba-{i}", _png(transparent(rng, w, h))))
    for i in range(6):
        img = _shapes(rng, int(rng.integers(20, 500)), int(rng.integers(20, 500))).quantize(16, Image.Quantize.FASTOCTREE)
        img.info["transparency"] = 0
        items.append((f"palette-transparent-{i}", _png(img)))
    for i in range(4):
        items.append((f"grey-alpha-{i}", _png(transparent(rng, 200 + 50 * i, 150).convert("LA"))))
        items.append((f"bilevel-{i}", _png(_text(rng, 300, 120, i).convert("1"))))
    for i in range(3):
        items.append((f"gif-{i}", _encode(_shapes(rng, 300, 200 + 40 * i), "GIF")))
        items.append((f"webp-{i}", _encode(_face(i).resize((400, 300)), "WEBP")))
        items.append((f"bmp-{i}", _encode(_shapes(rng, 250, 90 + 60 * i), "BMP")))
    # A few big ones: a phone photo, a 48 MP photo, a big bitmap.
    items.append(("face-8000x6000", _jpeg(_face(1).resize((2000, 1500), reducing_gap=2.0).resize((8000, 6000), Image.NEAREST), 85)))
    items.append(("face-4032x3024", _jpeg(_face(2).resize((2016, 1512), reducing_gap=2.0).resize((4032, 3024), Image.NEAREST), 88)))
    items.append(("noise-3000x4000", _encode(_noise(rng, 750, 1000, 3).resize((3000, 4000)), "BMP")))
    return items


def run_pdq_js(frames, tmp_path, ops_for):
    """Run pdq.js in one Node process on RGB frames; returns its per-frame results."""
    request = []
    for i, a in enumerate(frames):
        path = tmp_path / f"frame-{i}.rgb"
        path.write_bytes(np.ascontiguousarray(a).tobytes())
        request.append({"path": str(path), "width": a.shape[1], "height": a.shape[0], "channels": 3,
                        "ops": ops_for(a)})
    proc = subprocess.run([NODE, str(ROOT / "tests/js/pdq_cli.mjs")], input=json.dumps({"frames": request}),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert len(out) == len(frames)
    for r in out:
        assert "error" not in r, r
    for path in tmp_path.glob("frame-*.rgb"):
        path.unlink()
    return out


@pytest.fixture(scope="module")
def conformance(tmp_path_factory):
    if NODE is None:
        pytest.skip("node is not installed")
    corpus = build_corpus()
    names, frames = [], []
    for name, data in corpus:
        names.append(name)
        frames.append(np.asarray(decode_image(data)))
    def detail(a):
        return ["hash", "dihedral", "variants"] if a.shape[0] * a.shape[1] <= DETAIL_MAX_PIXELS else ["hash"]
    js = run_pdq_js(frames, tmp_path_factory.mktemp("frames"), detail)
    return names, frames, js


# --- conformance: pdq.js == pdqhash on the same pixels ------------------------------------------

@needs_node
def test_pdq_js_equals_pdqhash_on_corpus(conformance):
    names, frames, js = conformance
    assert len(frames) >= 200
    distances, quality_diffs, worst = Counter(), [], []
    for name, a, r in zip(names, frames, js):
        ref = pdq_hash(a)
        d = pdq_distance(ref["hash"], r["hash"]["hash"])
        distances[d] += 1
        quality_diffs.append(abs(ref["quality"] - r["hash"]["quality"]))
        if d or quality_diffs[-1]:
            worst.append((name, a.shape, d, ref["quality"], r["hash"]["quality"]))
    sizes = sorted(a.shape[0] * a.shape[1] for a in frames)
    print(f"\nPDQ conformance on {len(frames)} images ({sizes[0]} to {sizes[-1]} pixels): "
          f"distance 0: {distances[0]}, 1: {distances[1]}, 2: {distances[2]}, "
          f">2: {sum(v for k, v in distances.items() if k > 2)}; quality off by 1: "
          f"{quality_diffs.count(1)}, worse: {sum(q > 1 for q in quality_diffs)}; mismatches: {worst[:10]}")
    assert distances[0] >= 0.95 * len(frames), worst
    assert max(distances) <= 2, worst
    assert max(quality_diffs) <= 1, worst
    # The corpus covers what it claims to.
    assert min(sizes) == 1 and max(sizes) >= 8000 * 6000


@needs_node
def test_dihedral_variants_equal_pdqhash(conformance):
    names, frames, js = conformance
    checked = 0
    exact = 0
    for name, a, r in zip(names, frames, js):
        if "dihedral" not in r:
            continue
        ref = pdq_dihedral(a)
        assert [v["variant"] for v in r["dihedral"]] == [v["variant"] for v in ref]
        for mine, theirs in zip(r["dihedral"], ref):
            d = pdq_distance(mine["hash"], theirs["hash"])
            assert d <= 2, (name, mine["variant"], d)
            assert abs(mine["quality"] - theirs["quality"]) <= 1
            exact += d == 0
            checked += 1
    assert checked >= 8 * 150   # frames
    assert exact >= 0.95 * checked


@needs_node
def test_dihedral_variants_are_the_transformed_images():
    """pdqDihedral's names mean what pdqhash's do: the hash of the rotated or flipped image."""
    def transforms(a):
        return {"orig": a, "rot90": np.rot90(a, 1), "rot180": np.rot90(a, 2), "rot270": np.rot90(a, 3),
                "flipx": a[::-1], "flipy": a[:, ::-1], "flipplus": a.transpose(1, 0, 2),
                "flipminus": np.rot90(a, 2).transpose(1, 0, 2)}
    for a, exact in ((np.asarray(_face(3).resize((64, 64), Image.LANCZOS)), True),
                     (np.asarray(_face(3).resize((256, 192), Image.LANCZOS)), False)):
        hashes = {name: pdq_hash(np.ascontiguousarray(t))["hash"] for name, t in transforms(a).items()}
        for v in pdq_dihedral(a):
            near = sorted(hashes, key=lambda name: pdq_distance(hashes[name], v["hash"]))
            assert near[0] == v["variant"], (v["variant"], near)
            if exact:   # at 64x64 sampling is symmetric: the DCT trick gives the very hash
                assert pdq_distance(hashes[v["variant"]], v["hash"]) <= 2, v["variant"]
            else:       # otherwise a one-pixel sampling shift remains, far less than to the others
                assert pdq_distance(hashes[near[1]], v["hash"]) - pdq_distance(hashes[near[0]], v["hash"]) > 30


@needs_node
def test_variants_agree_between_browser_and_server_code(conformance):
    names, frames, js = conformance
    checked = 0
    for name, a, r in zip(names, frames, js):
        if "variants" not in r:
            continue
        ref = pdq_variants(a)
        assert [v["variant"] for v in r["variants"]] == [v["variant"] for v in ref], name
        for mine, theirs in zip(r["variants"], ref):
            assert pdq_distance(mine["hash"], theirs["hash"]) <= 2, (name, mine["variant"])
        checked += 1
    assert checked >= 150
    seen = {v["variant"] for r in js for v in r.get("variants", [])}
    assert seen == {"full", "trimmed", "crop-1:1", "crop-4:3", "crop-3:4", "crop-16:9", "crop-9:16", "top-third"}


# --- trim -------------------------------------------------------------------------------------------

def test_reduced_decode_stays_within_the_pdq_budget():
    """The crawled side decodes large JPEGs at a reduced DCT scale (images.PDQ_SIDE): the
    hash stays within 8 bits of the full decode's (bench/bench_signals.py --drift measures it
    on hundreds), the scale maps back to the full picture, and nothing else is reduced."""
    worst = 0
    for i, side in enumerate((1600, 1900, 2600, 4000)):
        img = _face(i % len(FACES))
        img = img.resize((side, round(side * img.height / img.width)), Image.BICUBIC)
        data = _jpeg(img, 85)
        small, scale = decode_reduced(data)
        assert PDQ_SIDE <= max(small.size) < 2 * PDQ_SIDE, small.size
        assert abs(scale - small.width / img.width) < 1e-9 and scale < 1
        worst = max(worst, pdq_distance(pdq_hash(small)["hash"], pdq_hash(decode_image(data))["hash"]))
        png, png_scale = decode_reduced(_png(img.resize((img.width // 2, img.height // 2))))
        assert png_scale == 1.0 and png.size == (img.width // 2, img.height // 2)
    assert worst <= 8, worst
    small_jpeg = _jpeg(_face(0).resize((2 * PDQ_SIDE - 1, 700)))
    assert decode_reduced(small_jpeg)[1] == 1.0
    assert decode_reduced(_jpeg(_face(0).resize((3000, 2000))), None)[0].size == (3000, 2000)


def test_crawled_variants_come_from_one_dihedral_computation():
    a = np.asarray(bordered(_face(1).resize((400, 300)), 20, 20, 0, 0, "white"))
    got = {v["variant"]: v for v in pdq_crawled(a)}
    turns = {v["variant"]: v for v in pdq_dihedral(a)}
    assert got["full"]["hash"] == turns["orig"]["hash"] == pdq_hash(a)["hash"]
    assert set(got) == {"full", "trimmed", "crop-16:9", "top-third"} | set(turns) - {"orig"}
    assert all(got[name]["hash"] == turns[name]["hash"] for name in turns if name != "orig")
    registered = {v["variant"]: v["hash"] for v in pdq_variants(a)}
    assert all(got[name]["hash"] == registered[name] for name in ("trimmed", "crop-16:9", "top-third"))
    wide = np.asarray(_face(2).resize((640, 360)))           # already 16:9: no crop of it
    assert "crop-16:9" not in {v["variant"] for v in pdq_crawled(wide)}


def test_crawled_variants_equal_pdqhash_bit_for_bit_on_many_sizes():
    """The crawled side hashes its variants from one luma plane (images._LumaPdq); pdqhash
    computes each from the pixels. Same hashes and qualities, whatever the size: odd sizes,
    borders, parts under 64 px (which pdqhash itself hashes), pictures and noise."""
    import pdqhash

    from workers.signals import images

    def by_pdqhash(a, box):
        bits, quality = pdqhash.compute(np.ascontiguousarray(a[box["y"]:box["y"] + box["height"],
                                                                box["x"]:box["x"] + box["width"]]))
        return {"hash": images._hex(bits), "quality": int(quality)}

    rng = np.random.default_rng(19)
    pictures = [np.asarray(_face(n).resize(size)) for n, size in
                ((1, (1151, 863)), (2, (767, 1023)), (3, (640, 360)), (1, (97, 301)), (2, (64, 64)))]
    for k in range(24):
        w, h = int(rng.integers(30, 1300)), int(rng.integers(30, 1300))
        coarse = rng.integers(0, 256, (max(2, h // 20), max(2, w // 20), 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
        pictures.append(np.asarray(bordered(img, 12, 0, 30, 30, "black") if k % 3 == 0 else img))
    for a in pictures:
        height, width = a.shape[:2]
        got = {v["variant"]: {"hash": v["hash"], "quality": v["quality"]} for v in pdq_crawled(a)}
        bits, quality = pdqhash.compute_dihedral(np.ascontiguousarray(a))
        want = {v: {"hash": images._hex(b), "quality": int(quality)} for v, b in zip(DIHEDRAL_VARIANTS, bits)}
        want["full"] = want.pop("orig")
        box = trim_borders(a)
        if (box["width"], box["height"]) != (width, height):
            want["trimmed"] = by_pdqhash(a, box)
        if abs(width / height / (16 / 9) - 1) > images.CROP_SKIP_RELATIVE:
            want["crop-16:9"] = by_pdqhash(a, center_crop(width, height, 16 / 9))
        if height // images.TOP_PART >= images.TOP_MIN_ROWS:
            want["top-third"] = by_pdqhash(a, {"x": 0, "y": 0, "width": width, "height": height // images.TOP_PART})
        assert got == want, (a.shape, [k for k in want if got.get(k) != want[k]])


def test_trim_vectors_python():
    spec = json.loads(VECTORS.read_text())
    from workers.signals import images
    assert (spec["tolerance"], spec["min_keep"]) == (images.TRIM_TOLERANCE, images.TRIM_MIN_KEEP)
    assert len(spec["vectors"]) >= 10
    for v in spec["vectors"]:
        a = np.array(v["rgb"], np.uint8).reshape(v["height"], v["width"], 3)
        assert trim_borders(a) == v["box"], v["name"]


@needs_node
def test_trim_vectors_node():
    proc = subprocess.run([NODE, str(ROOT / "tests/js/trim_vectors.mjs")], capture_output=True, text=True, timeout=60)
    out = json.loads(proc.stdout)
    assert out["failures"] == [] and proc.returncode == 0, out
    assert out["checked"] == len(json.loads(VECTORS.read_text())["vectors"])


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
@pytest.mark.parametrize("border", [(20, 20, 20, 20, "white"), (60, 45, 0, 0, "black"), (0, 0, 33, 12, (30, 60, 90))])
def test_bordered_copy_trims_back(fmt, border):
    original = _face(4).resize((600, 400), Image.LANCZOS)
    copy = bordered(original, *border)
    data = _png(copy) if fmt == "png" else _jpeg(copy, 90)
    base = image_signals(_png(original) if fmt == "png" else _jpeg(original, 90))
    full = {v["variant"]: v["hash"] for v in base["pdq"]}["full"]
    got = {v["variant"]: v["hash"] for v in image_signals(data)["pdq"]}
    assert "trimmed" in got
    assert pdq_distance(got["full"], full) > 31          # the border alone defeats PDQ ...
    assert pdq_distance(got["trimmed"], full) <= (0 if fmt == "png" else 8)   # ... trimming undoes it
    if fmt == "png":
        top, bottom, left, right, _ = border
        assert trim_borders(np.asarray(decode_image(data))) == {"x": left, "y": top, "width": 600, "height": 400}


# --- decoding rules (server side) ------------------------------------------------------------------

def _bomb_png(width=20000, height=20000):
    """A valid PNG header claiming width x height (greyscale), with a little real data."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    rows = zlib.compress(b"\0" * (width + 1) * 4)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def hostile_files():
    jpeg = _jpeg(_face(0), 90)
    return {"bomb.png": (_bomb_png(), "too_large"),
            "truncated.jpg": (jpeg[: len(jpeg) // 2], "undecodable"),
            "empty.jpg": (b"", "empty"),
            "text.jpg": ("これは写真ではありません / not a photo\n".encode() * 20, "not_an_image")}


@pytest.mark.parametrize("name", list(hostile_files()))
def test_server_refuses_hostile_input(name):
    data, code = hostile_files()[name]
    t0 = time.perf_counter()
    with pytest.raises(ImageError) as err:
        image_signals(data)
    assert err.value.code == code
    assert err.value.message
    assert time.perf_counter() - t0 < 2


def test_server_decoding_rules():
    # EXIF orientation applied: every orientation decodes to the upright picture.
    upright = _face(5).resize((300, 200))
    ref = pdq_hash(np.asarray(decode_image(_jpeg(upright, 92))))["hash"]
    for o in range(1, 9):
        img = decode_image(exif_jpeg(upright, o))
        assert img.size == (300, 200), o
        assert pdq_distance(pdq_hash(np.asarray(img))["hash"], ref) <= 12, o
    # Transparent pixels over white, palette and greyscale expanded.
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((1, 1), (0, 0, 255, 255))
    rgba.putpixel((2, 2), (0, 0, 0, 128))
    a = np.asarray(decode_image(_png(rgba)))
    assert a.shape == (4, 4, 3) and tuple(a[0, 0]) == (255, 255, 255) and tuple(a[1, 1]) == (0, 0, 255)
    assert tuple(a[2, 2]) == (127, 127, 127)
    assert decode_image(_png(Image.new("L", (3, 2), 40))).mode == "RGB"
    assert decode_image(_png(Image.new("P", (3, 2), 5))).mode == "RGB"
    # Exactly the limit is decoded, one pixel row more is not (header only: nothing is allocated).
    assert MAX_PIXELS == 100_000_000
    with pytest.raises(ImageError) as err:
        decode_image(_bomb_png(10000, 10001))
    assert err.value.code == "too_large"


# --- the real browser -------------------------------------------------------------------------------

def _browser_signals(driver, url, name):
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.signalsUrl(arguments[0], arguments[1]).then(done, e => done({thrown: String(e)}));", url, name)


@pytest.mark.browser
def test_photo_signals_in_chromium_equal_server(chromium, static_server):
    rng = np.random.default_rng(5)
    upright = _face(1).resize((640, 427), Image.LANCZOS)
    files = {f"exif-{o}.jpg": exif_jpeg(upright, o) for o in range(2, 9)}
    files["face.jpg"] = FACES[2].read_bytes()
    files["face.png"] = _png(_face(3).resize((500, 700)))
    files["bordered.png"] = _png(bordered(_face(4).resize((400, 300)), 25, 25, 10, 10, "white"))
    files["transparent.png"] = _png(transparent(rng, 420, 300))
    files["palette.png"] = _png(_face(5).resize((300, 300)).quantize(32, Image.Quantize.FASTOCTREE))
    files["grey.png"] = _png(_face(0).convert("L").resize((333, 222)))
    for name, data in files.items():
        (static_server.files / name).write_bytes(data)
    chromium.get(static_server + "/harness/photo.html")
    wait_for(chromium, "window.harnessReady")
    upright_full = {v["variant"]: v["hash"] for v in image_signals(_jpeg(upright, 92))["pdq"]}["full"]
    worst = {}
    for name, data in files.items():
        got = _browser_signals(chromium, f"/files/{name}", name)
        assert "result" in got and "error" not in got["result"], (name, got)
        got = got["result"]
        ref = image_signals(data)
        assert (got["sha256"], got["md5"]) == (ref["sha256"], ref["md5"]), name
        assert (got["width"], got["height"]) == (ref["width"], ref["height"]), name
        assert [v["variant"] for v in got["pdq"]] == [v["variant"] for v in ref["pdq"]], name
        for mine, theirs in zip(got["pdq"], ref["pdq"]):
            d = pdq_distance(mine["hash"], theirs["hash"])
            worst[name] = max(worst.get(name, 0), d)
            assert d <= 2, (name, mine["variant"], d)
            assert abs(mine["quality"] - theirs["quality"]) <= 1, name
        if name.startswith("exif-"):   # the browser applied the orientation, as the server did
            assert (got["width"], got["height"]) == (640, 427), name
            full = {v["variant"]: v["hash"] for v in got["pdq"]}["full"]
            assert pdq_distance(full, upright_full) <= 12, name
    print(f"\nbrowser vs server, worst PDQ distance per file: {worst}")


@pytest.mark.browser
def test_hostile_input_in_chromium(chromium, static_server):
    hostile = hostile_files()
    for name, (data, _) in hostile.items():
        (static_server.files / name).write_bytes(data)
    (static_server.files / "ok.png").write_bytes(_png(_face(2).resize((200, 150))))
    chromium.get(static_server + "/harness/photo.html")
    wait_for(chromium, "window.harnessReady")
    for name, (_data, code) in hostile.items():
        t0 = time.perf_counter()
        got = _browser_signals(chromium, f"/files/{name}", name)
        elapsed = time.perf_counter() - t0
        assert "result" in got, (name, got)                 # photoSignals did not throw
        assert set(got["result"]) == {"error"}, (name, got)
        assert got["result"]["error"]["code"] == code, (name, got)
        assert len(got["result"]["error"]["message"]) > 10
        assert got["ms"] < 2000 and elapsed < 10, (name, got["ms"], elapsed)
    # The page is still alive and working.
    got = _browser_signals(chromium, "/files/ok.png", "ok.png")["result"]
    assert got["width"] == 200 and got["pdq"][0]["variant"] == "full"
    assert got["sha256"] == hashlib.sha256((static_server.files / "ok.png").read_bytes()).hexdigest()


@pytest.mark.browser
def test_photo_signals_in_a_web_worker(chromium, static_server):
    data = exif_jpeg(_face(3).resize((500, 333)), 6)
    (static_server.files / "worker.jpg").write_bytes(data)
    (static_server.files / "worker-empty.png").write_bytes(b"")
    chromium.get(static_server + "/harness/photo.html")
    wait_for(chromium, "window.harnessReady")
    run = ("const done = arguments[arguments.length - 1];"
           "window.signalsInWorker(arguments[0]).then(done, e => done({thrown: String(e)}));")
    got = chromium.execute_async_script(run, "/files/worker.jpg")
    in_page = _browser_signals(chromium, "/files/worker.jpg", "worker.jpg")["result"]
    assert got == in_page
    ref = image_signals(data)
    assert (got["width"], got["height"], got["sha256"]) == (ref["width"], ref["height"], ref["sha256"])
    assert chromium.execute_async_script(run, "/files/worker-empty.png")["error"]["code"] == "empty"


def test_truncated_images_fail_even_after_libraries_that_relax_pillow(tmp_path):
    """face_recognition and WeasyPrint set Pillow's LOAD_TRUNCATED_IMAGES on import; the
    server's decoding must not depend on what was imported before it."""
    import face_recognition  # noqa: F401  (sets the flag)
    import weasyprint  # noqa: F401
    from PIL import Image as PILImage
    from PIL import ImageFile
    buf = io.BytesIO()
    PILImage.new("RGB", (64, 64), (200, 30, 30)).save(buf, "JPEG")
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    with pytest.raises(ImageError) as err:
        decode_image(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert err.value.code == "undecodable"
