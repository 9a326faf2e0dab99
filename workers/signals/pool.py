"""One page's media signals side by side, in processes of their own.

pdqhash and dlib hold the GIL, so threads would wait on each other; a crawl worker computes
a page's media in a pool of processes instead, one per core by default
(settings.crawl_signal_processes; 1: in the worker's own process). `kesu run` starts one crawl
worker, so a page full of pictures uses every core; several crawl workers on one machine
should share the cores (crawl_signal_processes = cores / workers).

The children start from a fresh forkserver, not as forks of the crawl worker: they hold none
of its Chromium children, database connections or Redis socket. Bodies reach them through
pipes in memory, never through Redis or job arguments. A child that dies (out of memory, a
kill) costs nothing: that page is computed in the worker itself and the next page gets a
new pool.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

log = logging.getLogger(__name__)


def cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:                  # not on Linux
        return os.cpu_count() or 1


def processes_for(setting: int) -> int:
    """The pool's size for settings.crawl_signal_processes (0: one per core)."""
    return setting if setting > 0 else cores()


class SignalPool:
    """`map(fn, items)` like the builtin, over up to `processes` processes; a context manager
    that shuts them down. `fn` must be picklable (a module-level function or a partial of one)."""

    def __init__(self, processes: int):
        self.processes = max(1, int(processes))
        self._pool: ProcessPoolExecutor | None = None

    def map(self, fn, items) -> list:
        items = list(items)
        if self.processes == 1 or len(items) < 2:
            return [fn(item) for item in items]
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("forkserver"))
        try:
            return list(self._pool.map(fn, items))
        except BrokenProcessPool:
            log.warning("a signal process died; this page's media are computed in the worker itself")
            self.close()
            return [fn(item) for item in items]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> SignalPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
