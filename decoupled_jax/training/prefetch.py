"""Host batches prepared ahead so the train step never waits on Python (docs/pods.md).

A daemon thread pulls batches from the stage's host iterator, puts them on the devices with
the batch sharding, and keeps `size` of them ready. The order is the iterator's, so a run is
bit-identical with or without prefetching; an exception in the producer is re-raised in the
training loop.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

_DONE = object()


class Prefetcher:

  def __init__(self, batches: Iterator, transform: Callable, size: int = 2):
    self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(size)))
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, args=(batches, transform), daemon=True,
                                    name="host-batch-prefetch")
    self._thread.start()

  def _run(self, batches, transform):
    try:
      for b in batches:
        item = transform(b)
        while not self._stop.is_set():
          try:
            self._queue.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
        if self._stop.is_set():
          return
    except BaseException as e:  # noqa: BLE001 -- handed to the consumer
      self._queue.put(e)
      return
    self._queue.put(_DONE)

  def __iter__(self):
    return self

  def __next__(self):
    item = self._queue.get()
    if item is _DONE:
      raise StopIteration
    if isinstance(item, BaseException):
      raise item
    return item

  def close(self):
    self._stop.set()
    self._thread.join(timeout=5)
