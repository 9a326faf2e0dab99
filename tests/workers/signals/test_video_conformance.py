"""vPDQ in the victim's browser (intake/static/js/video.js, real headless Chromium) against
the server (workers/videos.py, PyAV + pdqhash), on videos made here with ffmpeg.

Both sides must sample the same frames (t = 0, 1, 2, ... s, the frame shown at t) and agree
within 2 bits per frame; sha256/md5 must equal hashlib; what the browser cannot decode must
come back as an error object with the hashes; vpdq_match must find a re-encoded, resized copy
and reject an unrelated video. The per-frame distance distribution is printed by
test_distance_distribution (run with -s, or read it in the captured output on failure).
"""
import collections
import hashlib
import math
import os
import shutil
import struct
import subprocess

import numpy as np
import pytest
from conftest import wait_for

from workers.signals import videos

FFMPEG = shutil.which("ffmpeg")
pytestmark = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is needed to make the test videos")

MAX_BITS = 2   # per frame, browser against server

# name -> (lavfi source, seconds, encoder arguments). Small and short: the whole module runs
# in well under a minute on two cores.
CONFORMANCE = {
    # H.264 with B-frames, 30 fps: t = 1, 2, ... fall exactly on frame timestamps.
    "h264-320x240-30fps.mp4": ("testsrc=size=320x240:rate=30", 6,
                               ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]),
    # VP9 at 29.97 fps: sample times fall between frames.
    "vp9-480x270-2997fps.webm": ("mandelbrot=size=480x270:rate=30000/1001:maxiter=256", 5,
                                 ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k", "-pix_fmt", "yuv420p"]),
    # HD H.264 with no colour tags: Chromium guesses BT.709 from the height.
    "h264-1280x720-25fps.mp4": ("testsrc2=size=1280x720:rate=25", 5,
                                ["-c:v", "libx264", "-preset", "veryfast", "-crf", "32", "-pix_fmt", "yuv420p"]),
    # Portrait, full range (as many phones record), 24 fps, a duration that is not whole.
    "h264-360x640-24fps-full.mp4": ("testsrc2=size=360x640:rate=24", 5.5,
                                    ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuvj420p", "-color_range", "pc"]),
    # VP9, 15 fps, colour bars with a moving picture on them.
    "vp9-640x360-15fps-bars.webm": ("smptebars=s=640x360:r=15[bg];testsrc=s=160x120:r=15[fg];"
                                    "[bg][fg]overlay=x='mod(t*60\\,480)':y=120:shortest=1", 8,
                                    ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k",
                                     "-pix_fmt", "yuv420p"]),
    # Tagged BT.709 on an SD frame (the guess would be BT.601).
    "h264-640x360-bt709.mp4": ("testsrc2=size=640x360:rate=30", 5,
                               ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-colorspace", "bt709",
                                "-color_primaries", "bt709", "-color_trc", "bt709"]),
    # No duration in the file, as MediaRecorder writes WebM: the end is found by seeking.
    "vp9-320x240-no-duration.webm": ("testsrc=size=320x240:rate=30", 5,
                                     ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k",
                                      "-pix_fmt", "yuv420p", "-live", "1", "-f", "webm"]),
    # A slide show: a frame every 2 s, so most seeks land on the frame already shown.
    "h264-320x240-halffps.mp4": ("testsrc=size=320x240:rate=1/2", 6,
                                 ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]),
}
ROTATED = {"h264-320x240-rot90.mp4": 90, "h264-320x240-rot270.mp4": 270}


def ffmpeg(args, out):
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args, str(out)],
                   check=True, timeout=120)


def rotate_mp4(data: bytes, degrees: int) -> bytes:
    """Set the track's display matrix (tkhd) to a rotation, as phones record upright video
    (this ffmpeg cannot write it)."""
    i = data.index(b"tkhd")
    version = data[i + 4]
    off = i + 4 + 4 + (8 + 8 + 4 + 4 + 8 if version == 1 else 4 + 4 + 4 + 4 + 4) + 8 + 2 + 2 + 2 + 2
    one, neg = 0x00010000, 0xFFFF0000
    a, b, c, d = {90: (0, one, neg, 0), 180: (neg, 0, 0, neg), 270: (0, neg, one, 0)}[degrees]
    return data[:off] + struct.pack(">9I", a, b, 0, c, d, 0, 0, 0, 0x40000000) + data[off + 36:]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """All test videos, made once: name -> path."""
    folder = tmp_path_factory.mktemp("videos")
    out = {}
    for name, (source, seconds, enc) in CONFORMANCE.items():
        ffmpeg(["-f", "lavfi", "-i", source, "-t", str(seconds), *enc], folder / name)
        out[name] = folder / name
    plain = folder / "plain-rot.mp4"
    ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-t", "3",
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"], plain)
    for name, degrees in ROTATED.items():
        (folder / name).write_bytes(rotate_mp4(plain.read_bytes(), degrees))
        out[name] = folder / name
    # Undecodable in Chromium: HEVC (no software decoder), MPEG-4 part 2 in AVI, garbage
    # bytes named .mp4, and a file with sound only.
    ffmpeg(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30", "-t", "3", "-c:v", "libx265",
            "-x265-params", "log-level=error", "-tag:v", "hvc1", "-pix_fmt", "yuv420p"], folder / "hevc.mp4")
    ffmpeg(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "3", "-c:v", "mpeg4", "-q:v", "5"],
           folder / "mpeg4.avi")
    ffmpeg(["-f", "lavfi", "-i", "sine=f=440:d=3", "-c:a", "libopus"], folder / "sound-only.webm")
    (folder / "garbage.mp4").write_bytes(os.urandom(200_000))
    whole = folder / "whole.mp4"
    ffmpeg(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30", "-t", "6", "-c:v", "libx264", "-preset", "veryfast",
            "-pix_fmt", "yuv420p", "-movflags", "+faststart"], whole)
    (folder / "truncated.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    # For the match: the first video re-encoded as VP9 at twice the size and lower quality,
    # and an unrelated video of the same length.
    ffmpeg(["-i", str(out["h264-320x240-30fps.mp4"]), "-vf", "scale=640:480", "-c:v", "libvpx-vp9",
            "-deadline", "realtime", "-cpu-used", "8", "-b:v", "150k", "-pix_fmt", "yuv420p"], folder / "copy-640x480.webm")
    ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-t", "6", "-c:v", "libx264",
            "-preset", "veryfast", "-pix_fmt", "yuv420p"], folder / "unrelated.mp4")
    for name in ["hevc.mp4", "mpeg4.avi", "sound-only.webm", "garbage.mp4", "truncated.mp4", "copy-640x480.webm",
                 "unrelated.mp4"]:
        out[name] = folder / name
    return out


@pytest.fixture(scope="module")
def page(chromium, static_server, made):
    for name, path in made.items():
        shutil.copy(path, static_server.files / name)
    chromium.get(static_server + "/harness/video.html")
    wait_for(chromium, "window.harnessReady")
    return chromium


def browser_signals(page, name):
    got = page.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.signalsUrl(arguments[0]).then(done, e => done({thrown: String(e)}));", f"/files/{name}")
    assert "thrown" not in got, got
    return got


@pytest.fixture(scope="module")
def browser(page):
    """video.js results of every conformance video, computed once: name -> {result, progress, ms}."""
    return {name: browser_signals(page, name) for name in [*CONFORMANCE, *ROTATED]}


@pytest.fixture(scope="module")
def server(made):
    return {name: videos.vpdq(made[name]) for name in [*CONFORMANCE, *ROTATED]}


def bits(a, b):
    return (int(a, 16) ^ int(b, 16)).bit_count()


# --- browser against server ------------------------------------------------------------------

@pytest.mark.browser
@pytest.mark.parametrize("name", [*CONFORMANCE, *ROTATED])
def test_browser_and_server_agree(browser, server, made, name):
    got = browser[name]["result"]
    assert "error" not in got, got
    data = made[name].read_bytes()
    assert got["sha256"] == hashlib.sha256(data).hexdigest()
    assert got["md5"] == hashlib.md5(data).hexdigest()
    theirs = server[name]
    assert len(got["vpdq"]) == len(theirs) == math.ceil(got["duration"] - 1e-3)
    assert [f[0] for f in got["vpdq"]] == [f[0] for f in theirs] == list(range(len(theirs)))
    for (t, q_browser, h_browser), (_, q_server, h_server) in zip(got["vpdq"], theirs):
        assert len(h_browser) == 64 and h_browser == h_browser.lower()
        assert bits(h_browser, h_server) <= MAX_BITS, (name, t, h_browser, h_server)
        assert abs(q_browser - q_server) <= 5, (name, t, q_browser, q_server)


@pytest.mark.browser
def test_distance_distribution(browser, server):
    """Prints how far apart the two sides are, frame by frame, over all videos."""
    counts = collections.Counter()
    per_video = {}
    for name, theirs in server.items():
        ours = browser[name]["result"].get("vpdq", [])
        d = [bits(a[2], b[2]) for a, b in zip(ours, theirs)]
        counts.update(d)
        per_video[name] = d
    total = sum(counts.values())
    print(f"\nvPDQ browser vs server, {total} frames in {len(server)} videos: "
          + ", ".join(f"{k} bits: {counts[k]}" for k in sorted(counts)))
    for name, d in per_video.items():
        ms = browser[name]["ms"]
        print(f"  {name:32s} frames {len(d):3d}  max {max(d, default=0)}  browser {ms:7.0f} ms")
    assert total >= 45
    assert max(counts) <= MAX_BITS


@pytest.mark.browser
def test_progress_runs_from_0_to_1(browser):
    for name, got in browser.items():
        p = got["progress"]
        assert p and p[0] == 0 and p[-1] == 1, (name, p)
        assert all(0 <= x <= 1 for x in p) and p == sorted(p), (name, p)


@pytest.mark.browser
def test_the_sampled_frames_differ(browser):
    """The frames of a moving video differ: a broken seek (always the first frame) fails."""
    hashes = [f[2] for f in browser["h264-320x240-30fps.mp4"]["result"]["vpdq"]]
    assert len(set(hashes)) == len(hashes)
    assert min(bits(a, b) for a, b in zip(hashes, hashes[1:])) > 2 * MAX_BITS


# --- what the browser cannot decode ------------------------------------------------------------

@pytest.mark.browser
@pytest.mark.parametrize("name, mime", [
    ("hevc.mp4", 'video/mp4; codecs="hvc1.1.6.L93.B0"'),
    ("mpeg4.avi", "video/x-msvideo"),
    ("garbage.mp4", None),
    ("sound-only.webm", None),
    ("truncated.mp4", None),   # the second half of the frames is missing
])
def test_undecodable_gives_error_and_hashes(page, made, name, mime):
    if mime is not None and page.execute_script("return window.canPlay([arguments[0]])[arguments[0]]", mime):
        pytest.skip(f"this Chromium decodes {mime}")
    got = browser_signals(page, name)["result"]
    data = made[name].read_bytes()
    assert got["error"]["code"] == "unsupported_video", got
    assert got["error"]["message"]
    assert got["sha256"] == hashlib.sha256(data).hexdigest()
    assert got["md5"] == hashlib.md5(data).hexdigest()
    assert "vpdq" not in got


@pytest.mark.browser
def test_no_file_is_an_error_not_an_exception(page):
    got = page.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.videoSignals(null).then(done, e => done({thrown: String(e)}));")
    assert got["error"]["code"] == "read_error", got


def test_server_errors_are_clear(made):
    with pytest.raises(videos.VideoError) as e:
        videos.vpdq(made["garbage.mp4"])
    assert e.value.code == "unsupported_video"
    with pytest.raises(videos.VideoError) as e:
        videos.vpdq(made["garbage.mp4"].read_bytes())
    assert e.value.code == "unsupported_video"
    with pytest.raises(videos.VideoError) as e:
        videos.vpdq(made["sound-only.webm"])
    assert e.value.code == "no_video"


def test_server_decodes_what_the_browser_cannot(made):
    """A crawled HEVC or AVI video is still hashed on the server, and matches its H.264 twin."""
    twin = made["mpeg4.avi"].with_name("twin.mp4")
    ffmpeg(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30", "-t", "3", "-c:v", "libx264",
            "-preset", "veryfast", "-pix_fmt", "yuv420p"], twin)
    hevc, avi, h264 = videos.vpdq(made["hevc.mp4"]), videos.vpdq(made["mpeg4.avi"]), videos.vpdq(twin)
    assert len(hevc) == len(avi) == 3
    assert videos.vpdq_match(hevc, h264)["match"]
    assert videos.vpdq_match(avi, h264)["match"]


# --- the server on its own ---------------------------------------------------------------------

def test_frames_are_the_ones_displayed(made):
    """Each sample is the last frame whose timestamp is <= t, checked against a plain decode."""
    import av
    for name in ["h264-320x240-30fps.mp4", "vp9-480x270-2997fps.webm", "h264-360x640-24fps-full.mp4"]:
        with av.open(str(made[name])) as c:
            duration = c.duration / 1e6
            stamps = [float(f.time) for f in c.decode(video=0)]
        frames = list(videos.video_frames(made[name]))
        assert [f.seconds for f in frames] == list(range(math.ceil(duration - 1e-3)))
        for f in frames:
            assert f.timestamp == max(s for s in stamps if s <= f.seconds + 1e-6), (name, f.seconds)


def test_bytes_path_and_file_object_agree(made):
    path = made["vp9-640x360-15fps-bars.webm"]
    by_path = videos.vpdq(path)
    assert videos.vpdq(path.read_bytes()) == by_path
    with open(path, "rb") as fh:
        assert videos.vpdq(fh) == by_path
    assert len(by_path) == 8


def test_caps(made, monkeypatch):
    path = made["h264-320x240-30fps.mp4"]
    assert len(videos.vpdq(path, max_frames=3)) == 3
    assert [f[0] for f in videos.vpdq(path, every=2.5)] == [0, 2.5, 5.0]
    monkeypatch.setattr(videos, "MAX_PIXELS", 320 * 240 - 1)
    with pytest.raises(videos.VideoError) as e:
        videos.vpdq(path)
    assert e.value.code == "too_large"


def test_sample_times():
    assert videos.sample_times(6.0) == [0, 1, 2, 3, 4, 5]
    assert videos.sample_times(5.5) == [0, 1, 2, 3, 4, 5]
    assert videos.sample_times(5.0005) == [0, 1, 2, 3, 4]
    assert videos.sample_times(0.2) == [0]
    assert len(videos.sample_times(10 ** 7)) == videos.MAX_FRAMES


# --- matching -----------------------------------------------------------------------------------

@pytest.mark.browser
def test_match_finds_a_reencoded_resized_copy(browser, made):
    """The victim's copy, hashed in her browser, against copies found on the web."""
    query = browser["h264-320x240-30fps.mp4"]["result"]["vpdq"]
    copy = videos.vpdq(made["copy-640x480.webm"])
    found = videos.vpdq_match(query, copy)
    assert found["match"] and found["query_share"] >= 0.8 and found["target_share"] >= 0.8, found
    other = videos.vpdq_match(query, videos.vpdq(made["unrelated.mp4"]))
    assert not other["match"] and other["query_share"] < 0.5 and other["target_share"] < 0.5, other
    bars = videos.vpdq_match(query, videos.vpdq(made["vp9-640x360-15fps-bars.webm"]))
    assert not bars["match"], bars


def test_match_is_a_bag_of_frames_with_both_sides():
    rng = np.random.default_rng(7)

    def random_hash():
        return rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex()

    def flip(h, n):
        x = int(h, 16)
        for i in rng.choice(256, n, replace=False):
            x ^= 1 << int(i)
        return f"{x:064x}"

    clip = [[t, 100, random_hash()] for t in range(10)]
    near = [[t, 100, flip(h, 20)] for t, _, h in clip]                 # every frame 20 bits away
    assert videos.vpdq_match(clip, near)["match"]
    assert not videos.vpdq_match(clip, [[t, 100, flip(h, 40)] for t, _, h in clip])["match"]
    # A long video containing the clip: the clip is found in it, but most of the long video
    # is elsewhere, so it is no match (both sides must reach 80 %).
    long = near[::-1] + [[t, 100, random_hash()] for t in range(10, 40)]
    m = videos.vpdq_match(clip, long)
    assert m["query_share"] == 1.0 and m["target_share"] == 0.25 and not m["match"]
    # Order does not matter, and low-quality frames are left out.
    assert videos.vpdq_match(clip, near[::-1])["match"]
    assert not videos.vpdq_match([[0, 10, clip[0][2]]], clip)["match"]
