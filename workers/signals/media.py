"""Server-side signals of one file or response body: the crawled side of every match.

`kesu hash` prints them; the crawler computes them for each media body it captured.
Images get PDQ of the full image and its 8 dihedral turns (one computation, so flipped or
rotated re-uploads match), its border-trimmed form and its widest centre crop (CRAWLED_CROPS);
videos get vPDQ frames; both get face descriptors (videos on a capped sample of frames).

Large JPEGs are decoded at a reduced scale for PDQ (images.PDQ_SIDE), where the face first
pass looks too, and, only when it found a small face, once more at the scale where that face
is big enough to describe (faces.DETAIL_FACE); boxes are reported in the full picture's pixels.
"""
import hashlib
import io
import os

import numpy as np

from workers.signals.images import PDQ_SIDE, ImageError, decode_reduced, pdq_crawled, pdq_dihedral, pdq_variants
from workers.signals.videos import VideoError, video_frames, vpdq

FACE_FRAMES_PER_VIDEO = 8     # faces are searched in at most this many frames of a video
READ_CHUNK = 1 << 20
MAX_IMAGE_FILE = 256 << 20     # larger files are not tried as images


def _hashes(stream) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    while chunk := stream.read(READ_CHUNK):
        sha.update(chunk)
        md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def image_pdq(img) -> list[dict]:
    """The crawled side's PDQ variants (images.pdq_crawled)."""
    return pdq_crawled(img)


def every_pdq(img) -> list[dict]:
    """`kesu hash`: every variant either side computes (the registered side's and the dihedral
    turns), at full resolution, for a person comparing a file by hand."""
    return pdq_variants(img) + pdq_dihedral(img)[1:]


def _faces(images, scale: float = 1.0) -> list[dict]:
    from workers.signals.faces import describe_faces
    out = []
    for img in images:
        out.extend(describe_faces(img, scale=scale))
    return out


def _image_faces(image_bytes: bytes, small, small_scale: float) -> list[dict]:
    """Faces of an image: looked for in the PDQ decode (the first pass sees the picture at
    faces.DETECT_MAX_SIDE px or less, and the PDQ decode is at least PDQ_SIDE px: enough
    for the nets' 24 and 48 px looks at its smallest face), and a small face described from
    a larger decode, made only then (faces.DETAIL_FACE)."""
    from workers.signals.faces import describe_faces
    detail = None
    if small_scale < 1.0:
        def detail(long_side: int):
            try:
                return decode_reduced(image_bytes, long_side)
            except ImageError:          # decoded once, not twice (a scale libjpeg refuses):
                return None             # describe from the PDQ decode, keep the hashes
    # The decode is upright RGB already (images._decode): its pixels go to the detector as
    # they are, without the PIL image's second look at EXIF and copy.
    return describe_faces(np.asarray(small), scale=small_scale, detail=detail)


def _video_faces(source, duration_frames: int) -> list[dict]:
    step = max(1.0, duration_frames / FACE_FRAMES_PER_VIDEO)
    frames = [f.rgb for f in video_frames(source, every=step, max_frames=FACE_FRAMES_PER_VIDEO)]
    return _faces(frames)


def _signals(sha256: str, md5: str, image_bytes: bytes | None, video_source, faces: bool,
             crawled: bool = True) -> dict:
    out = {"sha256": sha256, "md5": md5, "pdq": [], "vpdq": [], "faces": [], "error": None}
    image_error = ImageError("too_large", "too big to be an image") if image_bytes is None else None
    if image_bytes is not None:
        try:
            img, scale = decode_reduced(image_bytes, PDQ_SIDE if crawled else None)
        except ImageError as exc:
            image_error = exc
        else:
            out["pdq"] = image_pdq(img) if crawled else every_pdq(img)
            out["faces"] = _image_faces(image_bytes, img, scale) if faces else []
            return out
    if image_error.code == "empty":
        out["error"] = str(image_error)
        return out
    try:
        out["vpdq"] = vpdq(video_source())
        if faces and out["vpdq"]:
            out["faces"] = _video_faces(video_source(), len(out["vpdq"]))
    except VideoError as video_error:
        out["error"] = f"neither an image ({image_error}) nor a video ({video_error.code}: {video_error})"
    return out


def body_signals(data: bytes, faces: bool = True) -> dict:
    """Signals of bytes held in memory (a crawled response body)."""
    sha256, md5 = _hashes(io.BytesIO(data))
    return _signals(sha256, md5, data, lambda: io.BytesIO(data), faces)


def file_signals(path: str, faces: bool = True) -> dict:
    """`kesu hash`: the signals of a local file, streamed (a 1 GB video is never read whole);
    errors are reported in the line, never raised."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            sha256, md5 = _hashes(fh)
            fh.seek(0)
            image_bytes = fh.read() if size <= MAX_IMAGE_FILE else None
    except OSError as exc:
        return {"file": path, "sha256": None, "md5": None, "pdq": [], "vpdq": [], "faces": [],
                "error": f"cannot read: {exc.strerror or exc}"}
    return {"file": path, **_signals(sha256, md5, image_bytes, lambda: path, faces, crawled=False)}
