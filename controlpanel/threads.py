"""One call started now on a thread of its own, its answer a Future: a read or a helper begun
ahead of the moment it is needed, beside what the caller does meanwhile."""

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor


def started(call: Callable, /, *args, name: str, **kwargs) -> Future:
    """`call(*args, **kwargs)` running on a thread named after `name`; nothing waits for it
    but whoever asks the Future for its result."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    future = pool.submit(call, *args, **kwargs)
    pool.shutdown(wait=False)
    return future
