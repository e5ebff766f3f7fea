"""Write-behind: an item's outputs are written on a thread while the next item computes.

At most ``depth`` items wait for the writer, which bounds memory (each holds its frames).
A failed write is handed to ``on_error`` with the item, like any other per-item failure.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class WriteBehind:
    def __init__(
        self,
        on_done: Callable[[Any, Any], None],
        on_error: Callable[[Any, BaseException], None],
        depth: int = 1,
        name: str = "writer",
    ):
        self._on_done, self._on_error, self._depth = on_done, on_error, depth
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: deque[tuple[Any, Future]] = deque()

    def submit(self, item: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue ``fn(*args, **kwargs)`` for ``item``; waits while ``depth`` items queue."""
        self._pending.append((item, self._pool.submit(fn, *args, **kwargs)))
        while len(self._pending) > self._depth:
            self._collect()

    def _collect(self) -> None:
        item, future = self._pending.popleft()
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001 - one item's failure, recorded by the stage
            self._on_error(item, exc)
        else:
            self._on_done(item, result)

    def drain(self) -> None:
        while self._pending:
            self._collect()

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if exc_info[0] is None:
                self.drain()
        finally:
            self._pool.shutdown(wait=True)
