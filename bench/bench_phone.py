"""The victim's intake on a phone: how long she waits, in real headless Chromium at 390x844.

Phone profile: slow 4G (150 ms latency, 1.6 Mbps down, 750 kbps up, CDP
Network.emulateNetworkConditions) and the CPU slowed 4x (CDP Emulation.setCPUThrottlingRate,
where this Chromium allows it). Each scenario is also run without the profile in the same
run, and the ratio phone / unthrottled is printed beside the absolute figures:

  1. first visit: the front page ready (scripts loaded);
  2. one 12 MP photo (4000x3000 JPEG) from "Check what will be sent" to ready for review;
  3. first visit with selfies: the face tool's download (bytes, seconds, how many different
     values the progress bar showed while it moved);
  4. five photos + two selfies on a warm cache (the face tool already downloaded): to ready
     (the better of two tries: this machine is shared);
  5. a 20-second 720p video to ready, and the page thread's longest task meanwhile (what a tap
     waits for; the hashing runs in the signals worker), against the same video hashed on the
     page's own thread as before this issue (videoSignals without the worker).

Usage: .venv/bin/python bench/bench_phone.py [--cpu 4] [--photos 5]
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import make_chromium, wait_for  # noqa: E402
from intake_harness import SAMPLES, open_portal, phone_viewport  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

SLOW_4G = {"offline": False, "latency": 150, "downloadThroughput": 1_600_000 // 8, "uploadThroughput": 750_000 // 8}


def make_photos(folder: Path, count: int) -> list[Path]:
    """Generated photos: the first 12 MP, the others 3 MP (noise and shapes, so JPEG stays large)."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(17)
    out = []
    for i in range(count):
        w, h = (4000, 3000) if i == 0 else (2000, 1500)
        base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3), np.float32)
        noise = rng.normal(0, 25, (h, w, 3)).astype(np.float32)
        pixels = np.clip(base * (0.4 + 0.15 * i) + noise, 0, 255).astype(np.uint8)
        path = folder / f"photo{i + 1}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        out.append(path)
    return out


def make_video(folder: Path) -> Path:
    path = folder / "clip.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=1280x720:rate=30", "-t", "20", "-c:v", "libx264", "-preset", "veryfast",
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def driver(profile: bool, cpu: float):
    d = make_chromium(390, 844)
    phone_viewport(d)
    d.execute_cdp_cmd("Network.enable", {})
    throttled_cpu = False
    if profile:
        d.execute_cdp_cmd("Network.emulateNetworkConditions", SLOW_4G)
        try:
            d.execute_cdp_cmd("Emulation.setCPUThrottlingRate", {"rate": cpu})
            throttled_cpu = True
        except Exception:       # noqa: BLE001 - not every Chromium build allows it
            pass
    return d, throttled_cpu


def front_page(d, url) -> float:
    t0 = time.perf_counter()
    d.get(url + "/?lang=ja")
    wait_for(d, "document.documentElement.classList.contains('js')", 300)
    return time.perf_counter() - t0


def to_review(d, files, selfies=()) -> float:
    Select(d.find_element(By.ID, "category")).select_by_value("adult_ncii")
    d.find_element(By.ID, "files").send_keys("\n".join(str(f) for f in files))
    if selfies:
        d.find_element(By.ID, "selfies").send_keys("\n".join(str(f) for f in selfies))
        d.execute_script("document.querySelector('#consent-faces').click()")
    d.execute_script("document.querySelector('#consent-takedown').click()")
    t0 = time.perf_counter()
    d.execute_script("document.querySelector('#review').click()")
    wait_for(d, "!document.querySelector('#submit').disabled", 1800)
    return time.perf_counter() - t0


def video_review(d, url, video) -> tuple[float, float]:
    """(seconds to ready, longest task on the page's thread in ms) for one video."""
    front_page(d, url)
    d.execute_script("""
      window.longest = 0;
      new PerformanceObserver((list) => { for (const e of list.getEntries()) window.longest = Math.max(window.longest, e.duration); })
        .observe({type: 'longtask', buffered: false});""")
    seconds = to_review(d, [video])
    return seconds, d.execute_script("return window.longest")


def video_on_the_page(d, url, video) -> tuple[float, float]:
    """The same video hashed as before this issue: videoSignals on the page's own thread."""
    front_page(d, url)
    d.find_element(By.ID, "files").send_keys(str(video))
    return tuple(d.execute_async_script("""
      const done = arguments[arguments.length - 1];
      let longest = 0;
      new PerformanceObserver((list) => { for (const e of list.getEntries()) longest = Math.max(longest, e.duration); })
        .observe({type: 'longtask', buffered: false});
      const src = document.querySelector('script[type=module]').src.replace('intake.js', 'video.js');
      const t0 = performance.now();
      import(src).then((m) => m.videoSignals(document.querySelector('#files').files[0]))
        .then(() => done([(performance.now() - t0) / 1000, longest]), (e) => done([-1, String(e)]));"""))


def face_tool(d) -> tuple[float, int, int]:
    """(seconds, bytes, distinct progress values seen) of the face tool's download."""
    total = d.execute_script("return JSON.parse(document.body.dataset.faceTool).total")
    d.execute_script("""
      window.seen = new Set();
      const bar = document.querySelector('#intake-form .face-tool-progress');
      setInterval(() => window.seen.add(bar.value), 100);""")
    t0 = time.perf_counter()
    d.execute_script("document.querySelector('#consent-faces').click()")
    wait_for(d, "document.querySelector('#intake-form .face-tool-progress').value >= 1", 1800)
    seconds = time.perf_counter() - t0
    seen = d.execute_script("return [...window.seen].filter(v => v > 0 && v < 1).length")
    d.execute_script("document.querySelector('#consent-faces').click()")     # untick: the form starts clean
    return seconds, total, seen


def run(profile: bool, args, photos, selfies, video, url) -> dict:
    out = {}
    d, out["cpu_throttled"] = driver(profile, args.cpu)
    try:
        out["first_visit_s"] = front_page(d, url)
        out["one_12mp_photo_s"] = to_review(d, photos[:1])
        front_page(d, url)
        out["face_tool_s"], out["face_tool_bytes"], out["progress_values"] = face_tool(d)
        out["warm_visit_s"] = front_page(d, url)
        tries = [to_review(d, photos[:args.photos], selfies)]
        front_page(d, url)
        tries.append(to_review(d, photos[:args.photos], selfies))
        out["photos_and_selfies_warm_s"] = min(tries)
        out["video_s"], out["video_longest_task_ms"] = video_review(d, url, video)
        out["video_page_s"], out["video_page_longest_task_ms"] = video_on_the_page(d, url, video)
    finally:
        d.quit()
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpu", type=float, default=4.0, help="CPU slowdown factor of the phone profile")
    parser.add_argument("--photos", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        photos = make_photos(Path(tmp), args.photos)
        selfies = [SAMPLES / "sample1.jpg", SAMPLES / "sample2.jpg"]
        video = make_video(Path(tmp))
        with open_portal(Path(tmp) / "portal", org_name="Bench") as portal:
            base = run(False, args, photos, selfies, video, portal.url)
            phone = run(True, args, photos, selfies, video, portal.url)
    print(f"phone profile: 390x844, latency 150 ms, 1.6 Mbps down, 0.75 Mbps up, "
          f"CPU /{args.cpu:g} {'(applied)' if phone['cpu_throttled'] else '(NOT applied: this Chromium refused)'}")
    print(f"{'scenario':42} {'unthrottled':>12} {'phone':>10} {'ratio':>7}")
    for key, label in (("first_visit_s", "first visit, page ready (s)"),
                       ("one_12mp_photo_s", "one 12 MP photo -> ready for review (s)"),
                       ("face_tool_s", "first visit: face tool download (s)"),
                       ("warm_visit_s", "warm visit, page ready (s)"),
                       ("photos_and_selfies_warm_s", f"{args.photos} photos + 2 selfies, warm (s)"),
                       ("video_s", "20 s 720p video -> ready (s)"),
                       ("video_longest_task_ms", "  longest task on the page meanwhile (ms)"),
                       ("video_page_s", "same video hashed on the page, as before (s)"),
                       ("video_page_longest_task_ms", "  longest task on the page meanwhile (ms)")):
        ratio = f"{phone[key] / base[key]:7.1f}" if base[key] > 0 else f"{'-':>7}"
        print(f"{label:42} {base[key]:12.2f} {phone[key]:10.2f} {ratio}")
    print(f"face tool: {phone['face_tool_bytes'] / 1e6:.1f} MB; progress bar showed "
          f"{phone['progress_values']} different values while moving (unthrottled: {base['progress_values']})")


if __name__ == "__main__":
    main()
