"""The instance a worker process serves, with the org keys unlocked in its memory.

`kesu worker` (and `kesu crawl` when it runs jobs in its own process) sets it once;
jobs read it. Keys never travel through Redis or job arguments.
"""
from store.instance import Instance

_current: Instance | None = None
queues: tuple[str, ...] = ()        # what this process's worker serves (set by `kesu worker`)


def set_queues(names) -> None:
    global queues
    queues = tuple(names)


def set_instance(instance: Instance) -> None:
    global _current
    _current = instance


def instance() -> Instance:
    if _current is None:
        raise RuntimeError("no kesu instance in this process (start it with `kesu worker`)")
    return _current
