"""Face descriptors on the server: dlib's ResNet through face_recognition.

The same signal the victim's browser computes from her selfies (intake/static/js/faces.js):
a 128-d descriptor of a face chip that dlib aligns with its 5-point landmarks
(`get_face_chip_details(det, size=150, padding=0.25)`). Two descriptors of one person are
usually closer than 0.6 (Euclidean), two people usually farther apart.

Speed: the detector (HOG on CPU, CNN when dlib was built with CUDA) runs on a copy scaled
down to at most `DETECT_MAX_SIDE` pixels; the landmarks and the descriptor then run on the
full-resolution image, so small faces keep their detail and the descriptor does not depend
on the detection scale. Boxes are reported in the input image's pixel coordinates.

No Flask, no database: plain functions the hash and match workers call.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

# Longest side of the copy the detector sees, and how often it upsamples that copy.
# 1280 px with one upsampling finds faces down to ~40 px in the copy (~80 px in a 12 MP
# photo) at about a second per photo on one CPU core.
DETECT_MAX_SIDE = 1280
UPSAMPLE = 1
DESCRIPTOR_SIZE = 128

_models = None


def _load():
    global _models
    if _models is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # face_recognition_models imports pkg_resources
            import dlib
            import face_recognition
        _models = (dlib, face_recognition)
    return _models


def uses_cuda() -> bool:
    dlib, _ = _load()
    return bool(getattr(dlib, "DLIB_USE_CUDA", False))


def to_rgb_array(image) -> np.ndarray:
    """An RGB uint8 array (H, W, 3) from a PIL image or an array (grey, RGB or RGBA).

    A PIL image is turned upright by its EXIF orientation (as browsers show it, and as the
    browser computes its faces) and composited over white where it is transparent.
    """
    try:
        from PIL import Image, ImageOps
    except ImportError:          # pragma: no cover - Pillow is a dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba)
        return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an RGB image, got an array of shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.shape[2] == 4:
        alpha = arr[..., 3:4].astype(np.float32) / 255.0
        arr = (arr[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _detect(rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Face boxes (top, right, bottom, left) in full-resolution coordinates."""
    _, fr = _load()
    h, w = rgb.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    small = rgb
    if scale < 1.0:
        from PIL import Image
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
        scale_x, scale_y = size[0] / w, size[1] / h
    else:
        scale_x = scale_y = 1.0
    model = "cnn" if uses_cuda() else "hog"
    boxes = fr.face_locations(small, number_of_times_to_upsample=UPSAMPLE, model=model)
    out = []
    for top, right, bottom, left in boxes:
        t = max(0, int(math.floor(top / scale_y)))
        l = max(0, int(math.floor(left / scale_x)))
        b = min(h - 1, int(math.ceil((bottom + 1) / scale_y)) - 1)
        r = min(w - 1, int(math.ceil((right + 1) / scale_x)) - 1)
        if b > t and r > l:
            out.append((t, r, b, l))
    return out


def describe_faces(image) -> list[dict]:
    """[{"box": {x, y, width, height}, "descriptor": [128 floats]}] for every face found.

    `image` is an RGB ndarray (H, W, 3) or a PIL image. An image without faces gives [].
    """
    _, fr = _load()
    rgb = to_rgb_array(image)
    if rgb.shape[0] < 16 or rgb.shape[1] < 16:
        return []
    boxes = _detect(rgb)
    if not boxes:
        return []
    descriptors = fr.face_encodings(rgb, known_face_locations=boxes, num_jitters=1, model="small")
    faces = []
    for (top, right, bottom, left), desc in zip(boxes, descriptors):
        faces.append({
            "box": {"x": left, "y": top, "width": right - left + 1, "height": bottom - top + 1},
            "descriptor": [float(v) for v in desc],
        })
    faces.sort(key=lambda f: (f["box"]["x"], f["box"]["y"]))
    return faces


def face_distance(a, b) -> float:
    """Euclidean distance between two 128-d descriptors (dlib's measure; < 0.6 = same person)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != (DESCRIPTOR_SIZE,) or b.shape != (DESCRIPTOR_SIZE,):
        raise ValueError("face descriptors have 128 numbers")
    return float(np.linalg.norm(a - b))
