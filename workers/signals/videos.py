"""Video signals on the server: frames at 0, 1, 2, ... seconds, vPDQ, and the vPDQ match.

The browser (intake/static/js/video.js) computes the same signals from the victim's copy: it
seeks a <video> element to t = 0, 1, 2, ... seconds and hashes the frame shown there. Here the
frame shown at t is the last decoded frame whose timestamp is <= t (the first frame when none
is), sampled for every t < duration, which is what Chromium shows after a seek. Frames are
turned into RGB the way Chromium does it (see `_rgb`), so both sides agree within a few bits;
tests/workers/signals/test_video_conformance.py measures it.

No Flask, no database: plain functions on a path, bytes or a file object.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np

EVERY_SECONDS = 1.0
# Caps (the same in video.js): at most MAX_FRAMES sampled frames (3 hours at one a second),
# frames of at most MAX_PIXELS, and at most MAX_DECODED frames decoded in all, so a huge or
# hostile file costs bounded time and memory (one decoded frame is held at a time).
MAX_FRAMES = 10800
MAX_PIXELS = 7680 * 4320
MAX_DECODED = 3 * 3600 * 120
MATCH_THRESHOLD = 31      # bits, per frame
MATCH_SHARE = 0.8         # both sides: this share of frames within the threshold
MIN_QUALITY = 50          # PDQ frames below this quality say little (flat, dark) and are ignored


class VideoError(Exception):
    """The input cannot be turned into frames. `code` is one of
    unsupported_video (not a video, or a codec/container we cannot decode), no_video (no
    video stream), too_large (over the pixel cap)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Frame:
    seconds: float        # the sample time t
    timestamp: float      # the timestamp of the frame shown at t
    rgb: np.ndarray       # height x width x 3, uint8


# --- RGB the way Chromium draws a video frame to a canvas ------------------------------------

# libyuv's YUV -> RGB constants (row_common.cc: YG, YB, UB, UG, VG, VR), which Chromium's
# software path uses to draw a video frame to a canvas. Integer arithmetic, 6 fraction bits.
_LIBYUV = {
    ("601", False): (18997, -1160, 128, 25, 52, 102),   # kYuvI601Constants (BT.601 limited)
    ("601", True): (16320, 32, 113, 22, 46, 90),        # kYuvJPEGConstants (BT.601 full)
    ("709", False): (18997, -1160, 128, 14, 34, 115),   # kYuvH709Constants
    ("709", True): (16320, 32, 119, 12, 30, 101),       # kYuvF709Constants
    ("2020", False): (19003, -1160, 128, 12, 42, 107),  # kYuv2020Constants
    ("2020", True): (16320, 32, 121, 11, 37, 94),       # kYuvV2020Constants
}
# FFmpeg's AVColorSpace numbers -> matrix
_SPACES = {1: "709", 5: "601", 6: "601", 9: "2020", 10: "2020"}
_UNSPECIFIED = 2
_FULL_RANGE = 2   # AVCOL_RANGE_JPEG

# Planar YUV formats read directly: name -> (chroma x subsampling, chroma y subsampling, full range)
_PLANAR = {
    "yuv420p": (2, 2, False), "yuvj420p": (2, 2, True),
    "yuv422p": (2, 1, False), "yuvj422p": (2, 1, True),
    "yuv444p": (1, 1, False), "yuvj444p": (1, 1, True),
}


def _color(frame, codec_name: str, full: bool) -> tuple[str, bool]:
    """The matrix and range Chromium (headless, software decoding) uses, as measured:

    - VP9 (libvpx) takes the bitstream's matrix and range; an unknown matrix is BT.601.
    - Other codecs (FFmpeg): with matrix, primaries and transfer all tagged, the tagged matrix
      and range; with nothing tagged, full range means JPEG (BT.601 full), else the guess of
      media/ffmpeg/ffmpeg_common.cc (BT.709 for height >= 720, else BT.601), limited; a
      partly tagged stream gives an invalid colour space, drawn as BT.601 limited.
    """
    space = int(frame.colorspace or _UNSPECIFIED)
    primaries = int(getattr(frame, "color_primaries", _UNSPECIFIED) or _UNSPECIFIED)
    trc = int(getattr(frame, "color_trc", _UNSPECIFIED) or _UNSPECIFIED)
    if codec_name == "vp9":
        return _SPACES.get(space, "601"), full
    tagged = [x != _UNSPECIFIED for x in (space, primaries, trc)]
    if all(tagged) and space in _SPACES:
        return _SPACES[space], full
    if not any(tagged):
        if full:
            return "601", True
        return ("709" if frame.height >= 720 else "601"), False
    return "601", False


def _yuv_planes(frame, sx: int, sy: int):
    h, w = frame.height, frame.width
    ch, cw = -(-h // sy), -(-w // sx)
    out = []
    for i, (ph, pw) in enumerate([(h, w), (ch, cw), (ch, cw)]):
        p = frame.planes[i]
        out.append(np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[:ph, :pw])
    return out


def _rgb(frame, codec_name: str) -> np.ndarray:
    """Convert a decoded frame to RGB (uint8, h x w x 3) as Chromium's software path does:
    libyuv's integer constants, nearest-neighbour chroma."""
    name = frame.format.name
    if name in _PLANAR:
        sx, sy, full = _PLANAR[name]
        full = full or int(frame.color_range or 0) == _FULL_RANGE
        matrix, full = _color(frame, codec_name, full)
        yg, yb, ub, ug, vg, vr = _LIBYUV[(matrix, full)]
        y, u, v = _yuv_planes(frame, sx, sy)
        h, w = frame.height, frame.width
        y = y.astype(np.int64)
        u = u.astype(np.int32).repeat(sy, 0).repeat(sx, 1)[:h, :w] - 128
        v = v.astype(np.int32).repeat(sy, 0).repeat(sx, 1)[:h, :w] - 128
        y1 = ((y * 0x0101 * yg) >> 16).astype(np.int32) + yb
        rgb = np.empty((h, w, 3), np.uint8)
        rgb[..., 0] = np.clip((y1 + v * vr) >> 6, 0, 255)
        rgb[..., 1] = np.clip((y1 - u * ug - v * vg) >> 6, 0, 255)
        rgb[..., 2] = np.clip((y1 + u * ub) >> 6, 0, 255)
        return rgb
    if name in ("rgb24", "bgr24", "gbrp", "rgba", "bgra", "argb", "abgr", "rgb0", "bgr0", "0rgb", "0bgr"):
        return frame.to_ndarray(format="rgb24")
    # Anything else (10-bit, NV12 from a hardware decoder, palettes): let swscale convert,
    # with the same matrix choice (close, not bit-exact).
    matrix, _ = _color(frame, codec_name, int(frame.color_range or 0) == _FULL_RANGE)
    space = {"709": "ITU709", "2020": "BT2020"}.get(matrix, "ITU601")
    return frame.reformat(format="rgb24", src_colorspace=space).to_ndarray()


def _rotate(rgb: np.ndarray, rotation) -> np.ndarray:
    """Apply the display matrix's rotation (browsers show rotated phone videos upright)."""
    turns = int(round((rotation or 0) / 90.0)) % 4
    # PyAV reports the counter-clockwise angle of the display matrix.
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


# --- frames --------------------------------------------------------------------------------

def _open(source):
    import av
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    elif isinstance(source, os.PathLike):
        source = os.fspath(source)
    try:
        return av.open(source, mode="r", metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise VideoError("unsupported_video", f"not a video that can be decoded: {e}") from None


def _duration(container, stream) -> float | None:
    """The duration a browser reports: the container's, else the stream's."""
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    return None


def sample_times(duration: float, every: float = EVERY_SECONDS, max_frames: int = MAX_FRAMES) -> list[float]:
    """0, every, 2*every, ... while t < duration (t = 0 always); the same rule as video.js."""
    times = []
    k = 0
    while len(times) < max_frames:
        t = k * every
        if k > 0 and t >= duration - 1e-3:
            break
        times.append(t)
        k += 1
    return times


def video_frames(source, every: float = EVERY_SECONDS, max_frames: int = MAX_FRAMES):
    """Yield a Frame for t = 0, every, 2*every, ... (t < duration, at most max_frames): the
    frame displayed at t. `source` is a path, bytes or a binary file object.

    Raises VideoError for input that is not a decodable video.
    """
    import av
    if every <= 0:
        raise ValueError("every must be positive")
    container = _open(source)
    try:
        if not container.streams.video:
            raise VideoError("no_video", "the file has no video stream")
        stream = container.streams.video[0]
        codec_name = stream.codec_context.name
        stream.thread_type = "AUTO"
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > MAX_PIXELS:
            raise VideoError("too_large", f"frames of {width}x{height} exceed {MAX_PIXELS} pixels")
        duration = _duration(container, stream)
        times = sample_times(duration, every, max_frames) if duration is not None else None

        def emit(frame, t, ts):
            if frame.width * frame.height > MAX_PIXELS:
                raise VideoError("too_large", f"frames of {frame.width}x{frame.height} exceed {MAX_PIXELS} pixels")
            return Frame(seconds=t, timestamp=ts, rgb=_rotate(_rgb(frame, codec_name), frame.rotation))

        k = 0          # index of the next sample time
        emitted = 0
        prev = None    # (frame, timestamp) of the last frame at or before the next sample time
        decoded = 0

        def target(i):
            return times[i] if times is not None else i * every

        def more(i):
            return i < max_frames and (times is None or i < len(times))

        try:
            for frame in container.decode(stream):
                decoded += 1
                if decoded > MAX_DECODED:
                    break
                if frame.pts is None or frame.time is None:
                    continue
                ts = float(frame.time)
                # Every sample time before this frame shows the previous frame (or this one,
                # when nothing came before).
                while more(k) and ts > target(k) + 1e-6:
                    shown, shown_ts = prev if prev is not None else (frame, ts)
                    yield emit(shown, target(k), shown_ts)
                    emitted += 1
                    k += 1
                if not more(k):
                    break
                prev = (frame, ts)
        except av.FFmpegError as e:
            if prev is None:
                raise VideoError("unsupported_video", f"the video cannot be decoded: {e}") from None
            # A damaged or cut-off tail: keep what was decoded, and let the last good frame
            # stand for the rest (Chromium reports such a file as an error instead; a crawled
            # copy cut short should still match).
        if prev is None:
            if emitted:
                return
            raise VideoError("unsupported_video", "no frame could be decoded")
        # The last frame stays on screen until the end. With no duration in the file
        # (MediaRecorder WebM), a browser takes the last frame's timestamp as the end.
        end = duration if duration is not None else prev[1]
        while more(k) and (target(k) < end - 1e-3 or k == 0):
            yield emit(prev[0], target(k), prev[1])
            k += 1
    finally:
        container.close()


# --- vPDQ ------------------------------------------------------------------------------------

def pdq_rgb(rgb: np.ndarray) -> tuple[str, int]:
    """(hex64, quality) of one RGB frame: workers/images.py's PDQ (lowercase hex, bit 0 of
    pdqhash's vector the most significant bit), the same as pdq.js in the browser."""
    from workers.signals.images import pdq_hash
    result = pdq_hash(rgb)
    return result["hash"], int(result["quality"])


def vpdq(source, every: float = EVERY_SECONDS, max_frames: int = MAX_FRAMES) -> list[list]:
    """[[seconds, quality, hex64], ...] for the frames at 0, 1, 2, ... seconds."""
    out = []
    for frame in video_frames(source, every=every, max_frames=max_frames):
        hex64, quality = pdq_rgb(frame.rgb)
        out.append([frame.seconds, quality, hex64])
    return out


def _hash_words(frames, min_quality: int) -> np.ndarray:
    hexes = sorted({f[2].lower() for f in frames if int(f[1]) >= min_quality})
    if not hexes:
        return np.zeros((0, 4), np.uint64)
    raw = np.frombuffer(bytes.fromhex("".join(hexes)), dtype=">u8").reshape(-1, 4)
    return raw.astype(np.uint64)


def _nearest(a: np.ndarray, b: np.ndarray, chunk: int = 512) -> np.ndarray:
    """For each hash of a, the smallest Hamming distance to any hash of b."""
    best = np.full(len(a), 257, dtype=np.int32)
    if len(b) == 0:
        return best
    for i in range(0, len(a), chunk):
        block = a[i:i + chunk]
        x = block[:, None, :] ^ b[None, :, :]
        d = np.bitwise_count(x).sum(axis=2, dtype=np.int32)
        best[i:i + chunk] = d.min(axis=1)
    return best


def vpdq_match(a, b, threshold: int = MATCH_THRESHOLD, min_quality: int = MIN_QUALITY,
               share: float = MATCH_SHARE) -> dict:
    """Bag-of-frames vPDQ match (Meta's vPDQ): the share of query frames (a) within
    `threshold` bits of some target frame (b), and the other way round; a match when both
    shares reach `share`. Frames below `min_quality` are left out on both sides; identical
    hashes count once (a still scene is one frame, many times)."""
    qa, qb = _hash_words(a, min_quality), _hash_words(b, min_quality)
    if len(qa) == 0 or len(qb) == 0:
        return {"query_share": 0.0, "target_share": 0.0, "match": False}
    query_share = float((_nearest(qa, qb) <= threshold).mean())
    target_share = float((_nearest(qb, qa) <= threshold).mean())
    return {"query_share": query_share, "target_share": target_share,
            "match": query_share >= share and target_share >= share}
