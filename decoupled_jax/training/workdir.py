"""A run's working directory: one writer at a time, and logs that match its checkpoints.

* `WorkdirLock`: an exclusive `fcntl` lock on `<workdir>/.lock` held for the whole run, with
  the holder (pid, host, start time, command) written inside, so a second launch on the same
  workdir is refused with who holds it. The kernel drops the lock when the holder dies
  (`kill -9` included), so a stale lock file never blocks a resume.
* `MetricsLog`: `metrics.jsonl`; on resume, rows after the restored step are dropped so
  curves are never spliced (TensorBoard gets the same via `purge_step`, see trainer), and a
  line cut off by a crash mid-write is dropped with one warning.
* `disk_full`: a write that failed for lack of space, found however deeply it is wrapped
  (orbax's save threads, exception groups), as one `DiskFullError` line naming the file and
  the newest intact checkpoint step.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import socket
import sys
import time
from typing import Iterator, Optional

from decoupled_jax import util
from decoupled_jax.errors import DiskFullError, WorkdirLockedError
from decoupled_jax.util import checkpoint_steps  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


class WorkdirLock:

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, ".lock")
    self._fd = None

  def __enter__(self):
    os.makedirs(self.workdir, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.read(fd, 4096).decode(errors="replace").strip()
      os.close(fd)
      try:
        h = json.loads(holder)
        who = (f"pid {h['pid']} on {h['host']} since {h['started']} "
               f"({' '.join(h['argv'])[:200]})")
      except (ValueError, KeyError, TypeError):
        who = "another process"
      raise WorkdirLockedError(f"{self.workdir} is in use by {who}; wait for it to finish or "
                               f"choose another --workdir") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                             "argv": sys.argv}).encode())
    os.fsync(fd)
    self._fd = fd
    return self

  def __exit__(self, *exc):
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None


class MetricsLog:
  """Append-only JSON lines, each with a 'step'."""

  def __init__(self, path: str):
    self.path = path

  def _read(self) -> tuple[list[tuple[str, dict]], list[int], bool]:
    """([(line, row)], numbers of the lines that are not a JSON object, ends with a newline)."""
    with open(self.path, "rb") as f:
      text = f.read().decode("utf-8", errors="replace")
    good, bad = [], []
    for i, line in enumerate(text.split("\n"), 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except ValueError:
        row = None
      if isinstance(row, dict):
        good.append((line, row))
      else:
        bad.append(i)
    return good, bad, text.endswith("\n") or not text

  def _warn_torn(self, bad: list[int], kept: int) -> None:
    where = (f"line {bad[0]}" if len(bad) == 1 else
             f"{len(bad)} lines ({', '.join(map(str, bad[:5]))}{', ...' if len(bad) > 5 else ''})")
    log.warning("%s: dropped %s, cut off mid-write (a crash or a full disk while writing); "
                "kept the %d intact rows", self.path, where, kept)

  def truncate_after(self, step: int) -> int:
    """Drops rows with step > `step` and lines cut off mid-write (atomically); returns how
    many rows were dropped for their step."""
    if not os.path.exists(self.path):
      return 0
    good, bad, ends_with_newline = self._read()
    keep = [line for line, row in good if row.get("step", 0) <= step]
    if bad:
      self._warn_torn(bad, len(good))
    if len(keep) != len(good) or bad or not ends_with_newline:
      util.write_text(self.path, "".join(line + "\n" for line in keep))
    return len(good) - len(keep)

  def write(self, row: dict) -> None:
    try:
      with open(self.path, "a") as f:
        f.write(json.dumps(row) + "\n")
    except OSError as e:   # a failed write() does not name its file
      if e.filename is None:
        e.filename = self.path
      raise

  def rows(self) -> list[dict]:
    """The rows, without lines cut off mid-write (dropped with a warning)."""
    if not os.path.exists(self.path):
      return []
    good, bad, _ = self._read()
    if bad:
      self._warn_torn(bad, len(good))
    return [row for _, row in good]


# ---- a full disk --------------------------------------------------------------------------

_NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
# tensorstore (orbax's array writes) raises ValueError('RESOURCE_EXHAUSTED: ... Failed writing:
# "<file>": ... No space left on device [os_error_code=\'28\']').
_TEXT_NO_SPACE = re.compile(rf"No space left on device|os_error_code='?{errno.ENOSPC}\b")
_TEXT_QUOTA = re.compile(rf"Disk quota exceeded|os_error_code='?{errno.EDQUOT}\b")
_TEXT_PATHS = (re.compile(r'Failed writing: "([^"]+)"'), re.compile(r'file "([^"]+)"'))


def _wrapped(exc: BaseException) -> Iterator[BaseException]:
  """`exc` and every exception it wraps (__cause__, __context__, exception groups)."""
  stack, seen = [exc], set()
  while stack and len(seen) < 200:
    e = stack.pop()
    if e is None or id(e) in seen:
      continue
    seen.add(id(e))
    yield e
    stack.append(e.__context__)
    stack.append(e.__cause__)
    if isinstance(e, BaseExceptionGroup):
      stack.extend(reversed(e.exceptions))


def no_space(exc: BaseException) -> Optional[tuple[str, Optional[str]]]:
  """(reason, path or None) when `exc` is, or wraps, a write that failed for lack of space."""
  for e in _wrapped(exc):
    if isinstance(e, OSError) and e.errno in _NO_SPACE:
      return _NO_SPACE[e.errno], (os.fsdecode(e.filename) if e.filename is not None else None)
  for e in _wrapped(exc):
    try:
      text = str(e)
    except Exception:  # noqa: BLE001 -- a broken __str__ says nothing about space
      continue
    quota = _TEXT_QUOTA.search(text)
    if quota or _TEXT_NO_SPACE.search(text):
      paths = [m.group(1) for m in (p.search(text) for p in _TEXT_PATHS) if m]
      return _NO_SPACE[errno.EDQUOT if quota else errno.ENOSPC], (paths or [None])[0]
  return None


def disk_full(exc: BaseException, checkpoint_dir: Optional[str] = None,
              default_path: Optional[str] = None) -> Optional[DiskFullError]:
  """The one-line `DiskFullError` for `exc` when it is (or wraps) a failed write for lack of
  space, else None. With `checkpoint_dir` (a training run) the line names the newest intact
  step and says to rerun with --resume."""
  if isinstance(exc, DiskFullError):
    return exc
  found = no_space(exc)
  if found is None:
    return None
  reason, path = found
  path = path or default_path
  msg = reason + (f" writing {path}" if path else "")
  if checkpoint_dir is None:
    return DiskFullError(f"{msg}; free space and rerun", path)
  steps = checkpoint_steps(checkpoint_dir)
  step = steps[-1] if steps else None
  kept = (f"checkpoints up to step {step} are intact" if step is not None else
          "no checkpoint was written yet")
  return DiskFullError(f"{msg}; {kept}, free space and rerun with --resume", path, step)
