"""One call started now on a thread of its own, its answer a Future: a read or a helper begun
ahead of the moment it is needed, beside what the caller does meanwhile."""

import threading
from collections.abc import Callable
from concurrent.futures import Future


def started(call: Callable, /, *args, name: str, **kwargs) -> Future:
    """`call(*args, **kwargs)` running on a daemon thread named `name`: nothing waits for it
    but whoever asks the Future for its result, not even the process as it exits (a read
    given up on must not hold a command or a worker open)."""
    future: Future = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(call(*args, **kwargs))
        except BaseException as exc:  # given to whoever asks, as the call raised it
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future
