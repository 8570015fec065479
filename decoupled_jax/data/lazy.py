"""Image fields read from disk on demand, for datasets larger than RAM (docs/pods.md).

`LazyFrames` stands in for an (N, H, W, 3) uint8 array in `EpisodeData`: the window sampler
indexes it with (B, T) global frame indices and only those frames are read, demo by demo
(robomimic HDF5 files store images in per-frame chunks, so a window costs a few chunk reads).
Low-dim fields stay in memory. Reads happen in the prefetch thread (`training/prefetch.py`),
overlapping the train step; h5py serialises access, and each process opens its own handle.

Why not grain or a tfds data source: both index *records*; our training sample is a window
gathered across frames of one episode, which would mean storing every window (x16 the data)
or one record per frame read through another layer. Reading the frames of a window straight
from the file's own chunks needs nothing beyond h5py, which the reader already uses.
"""
from __future__ import annotations

import threading

import numpy as np


class LazyFrames:
  """Frames `datasets[i]` (paths inside `path`) concatenated along axis 0, read on demand."""

  def __init__(self, path: str, datasets: list[str], lengths: list[int], frame_shape: tuple,
               dtype=np.uint8):
    self.path, self.datasets = str(path), list(datasets)
    self.lengths = np.asarray(lengths, np.int64)
    self.ends = np.cumsum(self.lengths)
    self.starts = self.ends - self.lengths
    self.frame_shape, self.dtype = tuple(frame_shape), np.dtype(dtype)
    self._file, self._pid, self._lock = None, None, threading.Lock()

  @property
  def shape(self) -> tuple:
    return (int(self.ends[-1]),) + self.frame_shape

  @property
  def ndim(self) -> int:
    return 1 + len(self.frame_shape)

  def __len__(self) -> int:
    return int(self.ends[-1])

  def _handle(self):
    import os

    import h5py
    if self._file is None or self._pid != os.getpid():
      self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
    return self._file

  def __getitem__(self, idx):
    if isinstance(idx, slice):
      idx = np.arange(*idx.indices(len(self)))
    idx = np.asarray(idx, np.int64)
    flat = idx.reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
      raise IndexError(f"frame index out of range [0, {len(self)}) in {self.path}")
    out = np.empty((flat.size,) + self.frame_shape, self.dtype)
    demo = np.searchsorted(self.ends, flat, side="right")
    with self._lock:
      f = self._handle()
      for d in np.unique(demo):
        sel = np.flatnonzero(demo == d)
        local = flat[sel] - self.starts[d]
        uniq, inverse = np.unique(local, return_inverse=True)
        out[sel] = f[self.datasets[d]][uniq][inverse]   # h5py needs increasing indices
    return out.reshape(idx.shape + self.frame_shape)

  def __array__(self, dtype=None, copy=None):
    arr = self[np.arange(len(self))]
    return arr if dtype is None else arr.astype(dtype)

  def __getstate__(self):
    state = dict(self.__dict__)
    state.update(_file=None, _pid=None, _lock=None)
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()
