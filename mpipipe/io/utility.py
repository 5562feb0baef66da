"""ConcurrentIter: read ahead of a consumer in a background thread (smallpond's `utility.ConcurrentIter`)."""
from __future__ import annotations

import queue
import threading
from typing import Any, Iterable, Iterator, Optional

_END = object()


class ConcurrentIter:
    """Iterate `iterable` in a thread, keeping at most `max_buffer_size` items ready; use it as a context manager
    so the thread is joined and an error in the producer is raised in the consumer."""

    def __init__(self, iterable: Iterable[Any], max_buffer_size: int = 1) -> None:
        self._source = iterable
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=max(1, max_buffer_size))
        self._error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "ConcurrentIter":
        self._thread = threading.Thread(target=self._produce, name="ConcurrentIter", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._drain()
        if self._thread is not None:
            self._thread.join()

    def _produce(self) -> None:
        try:
            for item in self._source:
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._error = e
        finally:
            while not self._stop.is_set():
                try:
                    self._queue.put(_END, timeout=0.1)
                    return
                except queue.Full:
                    continue

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def __iter__(self) -> Iterator[Any]:
        if self._thread is None:
            raise RuntimeError("use ConcurrentIter in a with-statement: with ConcurrentIter(it) as items: ...")
        while True:
            item = self._queue.get()
            if item is _END:
                if self._error is not None:
                    raise self._error
                return
            yield item
