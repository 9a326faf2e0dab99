"""vPDQ throughput: seconds of video hashed per second of wall time, in the browser
(intake/static/js/video.js in headless Chromium: SHA-256 + MD5 + vPDQ) against the server
(workers/videos.py: vPDQ; hashlib for the bytes), on the same files made here with ffmpeg.

Prints absolute figures for each side and the ratio browser / server (the baseline is the
server, measured in the same run). Usage: .venv/bin/python bench/bench_video.py [--seconds N]
"""
import argparse
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import conftest  # noqa: E402  (the tests' static server and Chromium settings)

from workers.signals import videos  # noqa: E402

CASES = [
    ("h264 640x360 30fps", "testsrc2=size=640x360:rate=30", ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"], "mp4"),
    ("h264 1280x720 30fps", "testsrc2=size=1280x720:rate=30",
     ["-c:v", "libx264", "-preset", "veryfast", "-crf", "30", "-pix_fmt", "yuv420p"], "mp4"),
    ("vp9 640x360 30fps", "testsrc2=size=640x360:rate=30",
     ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "500k", "-pix_fmt", "yuv420p"], "webm"),
]


def make(folder: Path, seconds: int):
    out = []
    for label, source, enc, ext in CASES:
        path = folder / (label.replace(" ", "-") + "." + ext)
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi", "-i", source,
                        "-t", str(seconds), *enc, str(path)], check=True)
        out.append((label, path))
    return out


def serve(folder: Path):
    handler = type("H", (conftest._Handler,), {"roots": {"/static/": conftest.STATIC, "/harness/": conftest.HARNESS,
                                                          "/files/": folder}})
    server = conftest._Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=30, help="length of each test video")
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="kesu-bench-video-"))
    try:
        files = make(folder, args.seconds)
        server, base = serve(folder)
        driver = conftest.make_chromium()
        try:
            driver.get(base + "/harness/video.html")
            conftest.wait_for(driver, "window.harnessReady")
            ratios = []
            print(f"vPDQ throughput, {args.seconds} s videos, best of {args.runs} runs "
                  "(seconds of video per second; browser includes SHA-256 + MD5 + vPDQ, server vPDQ + hashlib)")
            for label, path in files:
                browser_s, server_s = [], []
                for _ in range(args.runs):
                    got = driver.execute_async_script(
                        "const done = arguments[arguments.length - 1];"
                        "window.signalsUrl(arguments[0]).then(done, e => done({thrown: String(e)}));",
                        f"/files/{path.name}")
                    result = got.get("result", {})
                    if "thrown" in got or "error" in result:
                        raise SystemExit(f"{label}: browser failed: {got}")
                    browser_s.append(got["ms"] / 1000)
                    start = time.perf_counter()
                    data = path.read_bytes()
                    hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()
                    frames = videos.vpdq(path)
                    server_s.append(time.perf_counter() - start)
                    assert len(frames) == len(result["vpdq"])
                duration = result["duration"]
                b, s = duration / min(browser_s), duration / min(server_s)
                ratios.append(b / s)
                print(f"  {label:22s} browser {b:7.1f} s/s ({min(browser_s) * 1000 / len(frames):6.1f} ms/frame)   "
                      f"server {s:7.1f} s/s ({min(server_s) * 1000 / len(frames):6.1f} ms/frame)   "
                      f"ratio browser/server {b / s:5.2f}")
            print(f"  geometric mean ratio browser/server: {statistics.geometric_mean(ratios):.2f}")
        finally:
            driver.quit()
            server.shutdown()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
