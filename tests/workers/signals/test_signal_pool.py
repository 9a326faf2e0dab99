"""One page's media signals side by side (workers.signals.pool): the pool's processes give
the very signals the crawl worker computes itself, a broken body is an error line and not a
lost page, and a child that dies costs the page nothing."""
import functools
import hashlib
import io
import os

import numpy as np
from PIL import Image

from workers.capture.crawl import media_signals
from workers.signals.pool import SignalPool, processes_for


def _media(body: bytes, mime="image/jpeg") -> dict:
    return {"body": body, "sha256": hashlib.sha256(body).hexdigest(), "mime": mime, "bytes": len(body),
            "url": f"https://site.test/{hashlib.md5(body).hexdigest()}.jpg"}


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((640, 480), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _pid(_):
    return os.getpid()


def _dies_in_a_child(parent: int, value: int) -> int:
    if os.getpid() != parent:
        os._exit(3)                     # as a child killed for its memory would
    return value * 2


def test_the_pool_gives_the_signals_the_worker_computes_itself():
    page = [_media(_jpeg(i)) for i in range(6)] + [_media(b"not an image at all", "image/png")]
    compute = functools.partial(media_signals, faces=False)
    here = SignalPool(1).map(compute, page)
    with SignalPool(2) as pool:
        there = pool.map(compute, page)
        pids = set(pool.map(_pid, range(8)))
    assert there == here
    assert all(s["pdq"] for s in there[:6])
    assert there[6]["error"] and not there[6]["pdq"]            # a broken body: its error, in its place
    assert os.getpid() not in pids                              # computed in other processes


def test_a_child_that_dies_costs_the_page_nothing():
    with SignalPool(2) as pool:
        assert pool.map(functools.partial(_dies_in_a_child, os.getpid()), [1, 2, 3]) == [2, 4, 6]
        assert pool.map(_pid, range(4))                         # and the next page gets a new pool


def test_pool_size_from_the_setting():
    assert processes_for(3) == 3
    assert processes_for(0) == len(os.sched_getaffinity(0))
    assert SignalPool(4).map(_pid, [1]) == [os.getpid()]        # one media: no pool to start
