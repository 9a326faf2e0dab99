"""PDQ of a 12-megapixel photo: in headless Chromium (pdq.js) against the server (pdqhash).

Baseline measured in the same run: pdqhash.compute (Meta's C++ reference, through
workers.signals.images) on the very pixels the browser hashes. The browser's and the server's runs
are interleaved, so that both see the same machine load. Prints absolute times (median) and
the ratio browser / server, for the hash alone and for the whole photo (decode + the PDQ
variants; the browser's figure also holds SHA-256 and MD5 of the file).

    .venv/bin/python bench/bench_pdq.py [--repeats N]
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import HARNESS, STATIC, _Handler, _Server, make_chromium, wait_for  # noqa: E402

from workers.signals.images import decode_image, image_signals, pdq_distance, pdq_hash  # noqa: E402

FACE = ROOT / "node_modules/@vladmandic/face-api/demo/sample1.jpg"


def make_photo(width=4000, height=3000) -> bytes:
    """A photo-like 12 MP JPEG: a sample photo scaled up, with sensor-like noise."""
    rng = np.random.default_rng(1)
    img = np.asarray(Image.open(FACE).convert("RGB").resize((width, height), Image.BICUBIC), dtype=np.int16)
    img = np.clip(img + rng.normal(0, 4, img.shape).astype(np.int16), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def call(driver, script, *args):
    got = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"Promise.resolve({script}).then(done, e => done({{error: String(e)}}));", *args)
    assert not (isinstance(got, dict) and "error" in got), got
    return got


def timed_ms(fn):
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    data = make_photo()
    folder = Path(tempfile.mkdtemp(prefix="kesu-bench-"))
    (folder / "photo.jpg").write_bytes(data)
    pixels = np.asarray(decode_image(data))
    height, width = pixels.shape[:2]

    handler = type("H", (_Handler,), {"roots": {"/static/": STATIC, "/harness/": HARNESS, "/files/": folder}})
    server = _Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    driver = make_chromium()
    load_before = os.getloadavg()[0]
    try:
        driver.get(f"http://127.0.0.1:{server.server_address[1]}/harness/photo.html")
        wait_for(driver, "window.harnessReady")
        prepared = call(driver, "window.preparePdq(arguments[0])", "/files/photo.jpg")
        first = call(driver, "window.hashPrepared()")["ms"]          # warms up the JIT
        browser_hash, server_hash, browser_all, server_all = [], [], [], []
        for _ in range(args.repeats):
            ms, ref = timed_ms(lambda: pdq_hash(pixels))
            server_hash.append(ms)
            got = call(driver, "window.hashPrepared()")
            browser_hash.append(got["ms"])
        for _ in range(max(3, args.repeats // 2)):
            server_all.append(timed_ms(lambda: image_signals(data))[0])
            browser_all.append(call(driver, "window.signalsUrl(arguments[0], 'photo.jpg')", "/files/photo.jpg")["ms"])
    finally:
        driver.quit()
        server.shutdown()

    b, s = statistics.median(browser_hash), statistics.median(server_hash)
    ba, sa = statistics.median(browser_all), statistics.median(server_all)
    distance = pdq_distance(got["hash"]["hash"], ref["hash"])
    print(f"PDQ of a {width}x{height} photo ({width * height / 1e6:.1f} MP), median of {args.repeats}, "
          f"interleaved (load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs):")
    print(f"  hash only     browser pdq.js {b:7.1f} ms (min {min(browser_hash):.1f}, first run {first:.1f})   "
          f"server pdqhash {s:7.1f} ms (min {min(server_hash):.1f})   ratio browser/server {b / s:5.2f}")
    print(f"  whole photo   browser photoSignals {ba:7.1f} ms (decode alone {prepared['decodeMs']:.1f} ms)   "
          f"server image_signals {sa:7.1f} ms   ratio {ba / sa:5.2f}")
    print(f"  browser and server hashes differ by {distance} bits")


if __name__ == "__main__":
    main()
