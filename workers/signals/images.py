"""Image decoding and PDQ signals on the server, the counterpart of the victim's browser.

intake/static/js/photo.js and pdq.js compute the same signals from a file she chooses; this
module computes them from media the crawler fetched. Both sides decode alike, so that the
same file gives the same hashes:

- Pillow's plain decode, no colour-profile conversion (the browser passes
  `colorSpaceConversion: 'none'`), EXIF orientation applied, the first frame of an animation;
- transparent pixels composited over white, palette and greyscale expanded to RGB;
- nothing over `MAX_PIXELS` is decoded (the header is read first), so a small file that
  claims 20000 x 20000 pixels costs nothing.

Variants: PDQ of the full image, of the image with uniform borders trimmed (one rule,
written here and in pdq.js, tested on the shared vectors in tests/vectors/trim.json), and of
centre crops to the common thumbnail shapes (DESIGN.md section 7: PDQ tolerates about 1 %
of crop, so a site's 1:1 thumbnail only matches a 1:1 crop registered beforehand).

The crawled side decodes large JPEGs at a reduced scale (`decode_reduced`): PDQ brings every
picture down to 64 x 64 anyway, and libjpeg's DCT scaling (Pillow's `draft`) gives those pixels
for a fraction of the decode and hash time. The browser always hashes the full picture; how far
the reduced hash moves from it is measured and budgeted at PDQ_SIDE below.

No Flask, no database: plain functions the hash worker and `kesu hash` call.
"""
from __future__ import annotations

import hashlib
import io
import math
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Decompression-bomb guard, the same as photo.js: refuse before decoding anything bigger.
MAX_PIXELS = 100_000_000

# Crawled side: JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps the
# long side >= PDQ_SIDE. Budget: median <= 3 and max <= 8 bits from the full-resolution hash
# (the match threshold is 31: a re-upload keeps 23 bits for its own changes). Measured on 160
# JPEGs of 1024-4000 px (photos, generated pictures; bench/bench_signals.py --drift 160 --side
# N): 768 gives median 2, p95 6, max 8 bits, at 7x less decode + hash time than the full
# picture; 640 gives median 2 but max 10 (12 on an upscaled face photo); 1024 max 6 at 1.5x
# 768's time.
PDQ_SIDE = 768

# Formats a browser decodes too; anything else Pillow could open is not taken as an image.
FORMATS = {"JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "AVIF"}

# Trim rule, shared with pdq.js (TRIM_TOLERANCE there): an edge line (row or column) is
# border when each channel of each of its pixels is within TRIM_TOLERANCE of that side's
# reference colour (its outermost line's first pixel). Top and bottom are trimmed over the
# full width, then left and right over the rows that remain. Nothing is trimmed when less
# than TRIM_MIN_KEEP of either dimension would remain (a flat or almost flat image).
TRIM_TOLERANCE = 24
TRIM_MIN_KEEP = 0.1

# Thumbnail shapes registered as centre crops, and how close to the image's own shape a crop
# may be before it is skipped (it would be the full image again).
CROP_ASPECTS = [("1:1", 1, 1), ("4:3", 4, 3), ("3:4", 3, 4), ("16:9", 16, 9), ("9:16", 9, 16)]
CROP_SKIP_RELATIVE = 0.02
# The top third of the picture, hashed on its own: a deepfake made from an ordinary photo
# repaints the body and keeps the head and what is above it (bench/bench_deepfake_signals.py:
# the full hash finds 0 of 75 simulated edits, the top third all 75). Left out below
# TOP_MIN_ROWS rows (too little picture to say anything).
TOP_PART = 3
TOP_MIN_ROWS = 32

# The crawled side's centre crops. The registered side carries all five thumbnail shapes
# (images.CROP_ASPECTS), so a crawled thumbnail matches through them; a crawled crop only
# adds recall where a re-upload added something a crop cuts off again (a caption bar), and the
# widest crop cuts the most. Measured on tests/workers/matching/test_match_quality.py (200 originals x 11
# transforms): without the crawled 16:9 crop recall falls from 98.7 % to 97.5 % (25 text-bar
# re-uploads only it finds); each other crawled crop finds nothing the rest does not.
CRAWLED_CROPS = [("16:9", 16 / 9)]

# pdqhash.compute_dihedral's order: rot90 is a counter-clockwise quarter turn (numpy's
# rot90), flipx upside down, flipy a left-right mirror, flipplus the transpose, flipminus
# the anti-transpose.
DIHEDRAL_VARIANTS = ["orig", "rot90", "rot180", "rot270", "flipx", "flipy", "flipplus", "flipminus"]


class ImageError(Exception):
    """An input that is not turned into pixels; `code` is one of photo.js's error codes:
    empty, too_large, not_an_image, undecodable."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self):
        return f"{self.code}: {self.message}"


def decode_image(data: bytes) -> Image.Image:
    """Decode image bytes to an RGB Pillow image, or raise ImageError."""
    return _decode(data, None)[0]


def decode_reduced(data: bytes, min_side: int | None = PDQ_SIDE) -> tuple[Image.Image, float]:
    """(RGB image, scale): a JPEG decoded at the smallest DCT scale whose long side stays
    >= min_side (other formats, JPEGs already that small, and min_side None: whole). `scale` is the decoded
    width over the full width, to map boxes back to the full picture's pixels."""
    return _decode(data, min_side)


def _decode(data: bytes, min_side: int | None) -> tuple[Image.Image, float]:
    if not data:
        raise ImageError("empty", "the file is empty")
    with warnings.catch_warnings():
        # We apply our own limit below; Pillow's own (89 MP warning, 179 MP error) only backs it up.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageError("too_large", f"the image is too large to decode ({exc})") from None
        except UnidentifiedImageError:
            raise ImageError("not_an_image", "the file is not an image in a known format") from None
        except Exception as exc:   # a broken header Pillow recognised but could not parse
            raise ImageError("undecodable", f"the image header cannot be read ({exc})") from None
        if img.format not in FORMATS:
            raise ImageError("not_an_image", f"{img.format} images are not taken")
        width, height = img.size
        if width < 1 or height < 1:
            raise ImageError("undecodable", f"the image claims a size of {width}x{height}")
        if width * height > MAX_PIXELS:
            raise ImageError("too_large", f"the image claims {width}x{height} pixels, more than "
                                          f"{MAX_PIXELS // 1_000_000} megapixels")
        # face_recognition and WeasyPrint switch Pillow's process-wide LOAD_TRUNCATED_IMAGES on
        # when imported; a truncated file must fail here as it does in the browser, whatever
        # was imported before.
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        if min_side and img.format in ("JPEG", "MPO") and max(width, height) >= 2 * min_side:
            # Pillow picks the largest scale 1/k with k <= width // request (and height): a
            # request of exactly min_side on the long side keeps that side >= min_side.
            r = min_side / max(width, height)
            img.draft(None, (max(1, int(width * r)), max(1, int(height * r))))
        scale = img.size[0] / width
        try:
            img.load()
        except Exception as exc:   # truncated or corrupt data
            raise ImageError("undecodable", f"the image data cannot be decoded ({exc})") from None
    try:
        if img.getexif().get(0x0112, 1) != 1:
            img = ImageOps.exif_transpose(img)
    except Exception:   # a broken EXIF block: keep the stored orientation, as browsers do
        pass
    return _to_rgb(img), scale


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit (or wider) greyscale: scale to 8 bits as a browser does, not clip.
        a = np.asarray(img, dtype=np.float64)
        scale = 257.0 if mode.startswith("I;16") or a.max(initial=0) > 255 else 1.0
        grey = np.clip(np.floor(a / scale + 0.5), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), "RGB")
    transparent = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if not transparent:
        return img.convert("RGB") if mode != "RGB" else img
    rgba = np.asarray(img.convert("RGBA"), dtype=np.uint32)
    alpha = rgba[:, :, 3:4]
    rgb = (rgba[:, :, :3] * alpha + 255 * (255 - alpha) + 127) // 255
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def _rgb_array(img) -> np.ndarray:
    """HxWx3 uint8 pixels of a Pillow image (any mode, converted plainly) or an array (greyscale
    expanded; a fourth channel is ignored, as pdq.js ignores alpha: composite first)."""
    if isinstance(img, Image.Image) and img.mode != "RGB":
        img = img.convert("RGB")
    a = np.asarray(img)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise ValueError(f"an RGB uint8 image is expected, not {a.dtype} {a.shape}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape[2] == 1:
        return np.repeat(a, 3, axis=2)
    return a[:, :, :3]


def _line_is_border(line: np.ndarray, ref: np.ndarray) -> bool:
    return bool(np.all(np.abs(line.astype(np.int16) - ref) <= TRIM_TOLERANCE))


def trim_borders(rgb) -> dict:
    """The box {x, y, width, height} left after trimming uniform borders (pdq.js trimBorders)."""
    a = _rgb_array(rgb)
    height, width = a.shape[:2]
    full = {"x": 0, "y": 0, "width": width, "height": height}
    top, bottom = 0, height            # bottom exclusive
    ref = a[0, 0].astype(np.int16)
    while top < height and _line_is_border(a[top], ref):
        top += 1
    ref = a[height - 1, 0].astype(np.int16)
    while bottom > top and _line_is_border(a[bottom - 1], ref):
        bottom -= 1
    if bottom - top < max(1, math.ceil(height * TRIM_MIN_KEEP)):
        return full
    left, right = 0, width             # right exclusive
    ref = a[top, 0].astype(np.int16)
    while left < width and _line_is_border(a[top:bottom, left], ref):
        left += 1
    ref = a[top, width - 1].astype(np.int16)
    while right > left and _line_is_border(a[top:bottom, right - 1], ref):
        right -= 1
    if right - left < max(1, math.ceil(width * TRIM_MIN_KEEP)):
        return full
    return {"x": left, "y": top, "width": right - left, "height": bottom - top}


def center_crop(width: int, height: int, aspect: float) -> dict:
    """The largest centred box of the given aspect (width / height): pdq.js centerCrop."""
    if width / height > aspect:
        w = max(1, min(width, math.floor(height * aspect + 0.5)))
        return {"x": (width - w) // 2, "y": 0, "width": w, "height": height}
    h = max(1, min(height, math.floor(width / aspect + 0.5)))
    return {"x": 0, "y": (height - h) // 2, "width": width, "height": h}


def _hex(bits) -> str:
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


def _pdq(a: np.ndarray) -> dict:
    import pdqhash
    bits, quality = pdqhash.compute(np.ascontiguousarray(a))
    return {"hash": _hex(bits), "quality": int(quality)}


def _crop(a: np.ndarray, box: dict) -> np.ndarray:
    return a[box["y"]:box["y"] + box["height"], box["x"]:box["x"] + box["width"]]


def pdq_hash(img) -> dict:
    """{hash, quality} of the whole image (pdq.js pdqHash)."""
    return _pdq(_rgb_array(img))


def pdq_dihedral(img) -> list[dict]:
    """The eight dihedral variants [{variant, hash, quality}] (pdq.js pdqDihedral)."""
    import pdqhash
    hashes, quality = pdqhash.compute_dihedral(np.ascontiguousarray(_rgb_array(img)))
    return [{"variant": v, "hash": _hex(h), "quality": int(quality)} for v, h in zip(DIHEDRAL_VARIANTS, hashes)]


def pdq_variants(img) -> list[dict]:
    """[{variant, hash, quality}]: full, trimmed (when a border was trimmed), the centre
    crops whose shape differs from the image's own and the top third (pdq.js pdqVariants)."""
    a = _rgb_array(img)
    height, width = a.shape[:2]
    out = [{"variant": "full", **_pdq(a)}]
    box = trim_borders(a)
    if box["width"] != width or box["height"] != height:
        out.append({"variant": "trimmed", **_pdq(_crop(a, box))})
    own = width / height
    for name, aw, ah in CROP_ASPECTS:
        aspect = aw / ah
        if abs(own / aspect - 1) <= CROP_SKIP_RELATIVE:
            continue
        out.append({"variant": f"crop-{name}", **_pdq(_crop(a, center_crop(width, height, aspect)))})
    if height // TOP_PART >= TOP_MIN_ROWS:
        out.append({"variant": "top-third", **_pdq(a[:height // TOP_PART])})
    return out


def pdq_crawled(img) -> list[dict]:
    """The crawled side's PDQ variants: full and its 8 dihedral turns from one computation
    (orig is reported as full), trimmed when a border was trimmed, CRAWLED_CROPS and the top
    third (the registered side's top third of her photo finds an edit that repainted the body).
    Every variant is a part of one luma plane (_LumaPdq): the same hashes as pdqhash's."""
    a = _rgb_array(img)
    height, width = a.shape[:2]
    pdq = _LumaPdq(a)
    turns = pdq.dihedral()
    out = [{**turns[0], "variant": "full"}]
    box = trim_borders(a)
    if box["width"] != width or box["height"] != height:
        out.append({"variant": "trimmed", **pdq.hash(box)})
    for name, aspect in CRAWLED_CROPS:
        if abs(width / height / aspect - 1) > CROP_SKIP_RELATIVE:
            out.append({"variant": f"crop-{name}", **pdq.hash(center_crop(width, height, aspect))})
    if height // TOP_PART >= TOP_MIN_ROWS:
        out.append({"variant": "top-third", **pdq.hash({"x": 0, "y": 0, "width": width, "height": height // TOP_PART})})
    return out + turns[1:]


class _LumaPdq:
    """PDQ of parts of one picture from one luma plane, for the crawler's several variants.

    pdqhash computes luma again for each call, in float64 numpy (about 40 % of its time), and
    filters the whole plane four times; here luma is computed once (OpenCV, float32) and the
    tent filter's passes are OpenCV box filters, the last two only where the 64 x 64
    decimation reads. The algorithm is PDQ's as pdq.js writes it (windows, edges that average
    what they hold, sample points, DCT, median, quality); tests/workers/signals/
    test_pdq_conformance.py holds every variant equal to pdqhash's, bit for bit. Parts
    smaller than 64 pixels either way go to pdqhash itself (its own small-picture rules).
    """

    DCT = (np.float32(math.sqrt(2.0 / 64))
           * np.cos((math.pi / 128) * np.outer(np.arange(1, 17), 2 * np.arange(64) + 1))).astype(np.float32)

    def __init__(self, a: np.ndarray):
        import cv2
        self.rgb = a
        self.luma = cv2.cvtColor(np.ascontiguousarray(a).astype(np.float32), cv2.COLOR_RGB2GRAY)

    @staticmethod
    def _box(plane: np.ndarray, window: int, axis: int) -> np.ndarray:
        """PDQ's box pass along `axis` (1: along rows): output i averages inputs
        i - (window - half) .. i + half - 1 that exist, half = (window + 2) // 2."""
        import cv2
        n = plane.shape[axis]
        half = (window + 2) // 2
        left, right = window - half, half - 1
        size, anchor = ((window, 1), (left, 0)) if axis == 1 else ((1, window), (0, left))
        sums = cv2.boxFilter(plane, cv2.CV_32F, size, anchor=anchor, normalize=False,
                             borderType=cv2.BORDER_CONSTANT)
        i = np.arange(n)
        count = (np.minimum(n - 1, i + right) - np.maximum(0, i - left) + 1).astype(np.float32)
        return sums / (count[None, :] if axis == 1 else count[:, None])

    def _dct(self, box: dict) -> tuple[np.ndarray, int]:
        plane = np.ascontiguousarray(self.luma[box["y"]:box["y"] + box["height"], box["x"]:box["x"] + box["width"]])
        rows, cols = plane.shape
        along_rows, along_cols = (cols + 127) // 128, (rows + 127) // 128
        sample_rows = ((np.arange(64) + 0.5) * rows / 64).astype(int)
        sample_cols = ((np.arange(64) + 0.5) * cols / 64).astype(int)
        once = self._box(self._box(plane, along_rows, 1), along_cols, 0)
        twice = self._box(np.ascontiguousarray(self._box(once, along_rows, 1)[:, sample_cols]), along_cols, 0)
        a = twice[sample_rows]
        gradient = (np.abs(np.trunc((a[:-1] - a[1:]) * np.float32(100) / np.float32(255))).sum()
                    + np.abs(np.trunc((a[:, :-1] - a[:, 1:]) * np.float32(100) / np.float32(255))).sum())
        return self.DCT @ a @ self.DCT.T, min(100, int(gradient / 90))

    @staticmethod
    def _bits(dct: np.ndarray) -> str:
        flat = dct.reshape(-1)
        return _hex((flat > np.sort(flat)[127])[::-1])

    def hash(self, box: dict) -> dict:
        if box["width"] < 64 or box["height"] < 64:
            return _pdq(_crop(self.rgb, box))
        dct, quality = self._dct(box)
        return {"hash": self._bits(dct), "quality": quality}

    def dihedral(self) -> list[dict]:
        height, width = self.luma.shape
        if width < 64 or height < 64:
            return pdq_dihedral(self.rgb)
        dct, quality = self._dct({"x": 0, "y": 0, "width": width, "height": height})
        sign = np.where(np.arange(16) % 2 == 1, 1, -1).astype(np.float32)    # under a mirror
        rows, cols = sign[:, None], sign[None, :]
        turned = {"orig": dct, "rot90": (cols * dct).T, "rot180": rows * cols * dct, "rot270": (rows * dct).T,
                  "flipx": rows * dct, "flipy": cols * dct, "flipplus": dct.T, "flipminus": (rows * cols * dct).T}
        return [{"variant": v, "hash": self._bits(turned[v]), "quality": quality} for v in DIHEDRAL_VARIANTS]


def pdq_distance(a: str, b: str) -> int:
    """Hamming distance of two 64-hex-digit PDQ hashes."""
    if len(a) != 64 or len(b) != 64:
        raise ValueError("PDQ hashes are 64 hex digits")
    return (int(a, 16) ^ int(b, 16)).bit_count()


def image_signals(data: bytes) -> dict:
    """{sha256, md5, pdq, width, height} of image bytes, as photo.js photoSignals computes
    them in the browser; raises ImageError for what is not a decodable image."""
    img = decode_image(data)
    return {"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest(),
            "pdq": pdq_variants(img), "width": img.width, "height": img.height}
