"""Small helpers every layer shares (the bottom layer, docs/architecture.md): atomic file
writes, the finished steps of a checkpoint folder, Wilson intervals, seeded host batches.

Imports the standard library only (numpy is fine too), never jax or another decoupled_jax
module, so the LIBERO venv (`decoupled_jax/libero/`, no jax there) can use it as well.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from typing import Any, Callable, Iterable, Iterator, Optional


# ------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ".tmp") -> Iterator[str]:
  """Yields `path + suffix` to write to; when the block ends without an error the file is
  moved onto `path` with `os.replace` (atomic on one filesystem), so a reader sees the old
  file or the new one, never a torn one. After an error the temporary file is left where it
  is and `path` is untouched. (`suffix` keeps an extension a writer needs, e.g. '.tmp.mp4'.)"""
  tmp = path + suffix
  yield tmp
  os.replace(tmp, path)


def write_bytes(path: str, data: bytes, *, makedirs: bool = False) -> None:
  """Atomic `data` -> `path` (temp file + os.replace); `makedirs` creates the parent first."""
  if makedirs:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)


def write_text(path: str, text: str, *, makedirs: bool = False) -> None:
  """Atomic `text` (utf-8) -> `path`."""
  write_bytes(path, text.encode("utf-8"), makedirs=makedirs)


def write_json(path: str, obj: Any, *, indent: Optional[int] = 2, sort_keys: bool = False,
               default: Optional[Callable[[Any], Any]] = None, makedirs: bool = False) -> None:
  """Atomic JSON `obj` -> `path` (json.dumps's `indent`, `sort_keys`, `default`)."""
  write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default),
             makedirs=makedirs)


def write_jsonl(path: str, rows: Iterable[Any], *, sort_keys: bool = False,
                default: Optional[Callable[[Any], Any]] = None, makedirs: bool = False) -> None:
  """Atomic JSON lines (one object per line, each ending in a newline) -> `path`."""
  write_text(path, "".join(json.dumps(r, sort_keys=sort_keys, default=default) + "\n"
                           for r in rows), makedirs=makedirs)


# ---------------------------------------------------------------------- checkpoint steps
def read_jsonl_by(path: str, key: str = "episode") -> dict[int, dict]:
  """The rows of a resumable jsonl results file by their integer `key` (a later row wins); a
  missing file is empty, and a line a kill cut short is skipped (that row reruns)."""
  rows = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        line = line.strip()
        if not line:
          continue
        try:
          r = json.loads(line)
        except json.JSONDecodeError:
          continue
        rows[int(r[key])] = r
  return rows


def count_hdf5_demos(path: str) -> int:
  """How many `data/demo_*` groups a robomimic-layout HDF5 holds (0 if it is missing or not
  readable as one): what a resumable demo writer has already kept."""
  import h5py
  try:
    with h5py.File(path, "r") as f:
      return sum(1 for k in f["data"].keys() if k.startswith("demo_"))
  except (OSError, KeyError):
    return 0


def checkpoint_steps(checkpoint_dir: str) -> list[int]:
  """The finished steps of an orbax checkpoints folder, ascending (orbax renames a step's
  folder to its bare number only once every file is written); [] when there is no folder."""
  if not os.path.isdir(checkpoint_dir):
    return []
  return sorted(int(n) for n in os.listdir(checkpoint_dir) if n.isdigit())


# ------------------------------------------------------------------------------ statistics
def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
  """Wilson score interval for a binomial proportion k/n (95 % for z = 1.96); (0, 1) for
  n = 0."""
  if n <= 0:
    return (0.0, 1.0)
  p = k / n
  denom = 1 + z * z / n
  centre = (p + z * z / (2 * n)) / denom
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
  return (max(0.0, centre - half), min(1.0, centre + half))


# ------------------------------------------------------------------- seeded host batches
# Host batches as `training.stage.Stage.host_batches` takes them: `host_batches(start)` yields
# global batch k = start, start+1, ... as a function of (seed, k) only, so a resumed run sees
# the same data; `rows` (`training.sharding.process_rows(batch)`) picks this process's rows.
def seeded_batches(n: int, batch: int, seed: int, gather: Callable, rows=None) -> Callable:
  """Indices drawn uniformly with replacement from [0, n): batch k = gather(indices[rows])
  with indices = default_rng((seed, k)).integers(0, n, batch)."""
  import numpy as np
  rows = slice(None) if rows is None else rows

  def host_batches(start: int):
    step = start
    while True:
      yield gather(np.random.default_rng((seed, step)).integers(0, n, size=batch)[rows])
      step += 1

  return host_batches


def epoch_batches(n: int, batch: int, seed: int, gather: Callable, rows=None) -> Callable:
  """Shuffled passes over [0, n), the last partial batch dropped (the reference's epoch
  budget): batch k is batch k % (n // batch) of permutation default_rng((seed, epoch))."""
  import numpy as np
  per_epoch = n // batch
  if per_epoch < 1:
    raise ValueError(f"{n} items, fewer than one batch of {batch}")
  rows = slice(None) if rows is None else rows

  def host_batches(start: int):
    step = start
    while True:
      epoch, i = divmod(step, per_epoch)
      perm = np.random.default_rng((seed, epoch)).permutation(n)
      yield gather(perm[i * batch:(i + 1) * batch][rows])
      step += 1

  return host_batches
