"""A run's working directory: one writer at a time, and logs that match its checkpoints.

* `WorkdirLock`: an exclusive `fcntl` lock on `<workdir>/.lock` held for the whole run, with
  the holder (pid, host, start time, command) written inside, so a second launch on the same
  workdir is refused with who holds it. The kernel drops the lock when the holder dies
  (`kill -9` included), so a stale lock file never blocks a resume.
* `MetricsLog`: `metrics.jsonl`; on resume, rows after the restored step are dropped so
  curves are never spliced (TensorBoard gets the same via `purge_step`, see trainer).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time

from decoupled_jax.errors import WorkdirLockedError


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

  def truncate_after(self, step: int) -> int:
    """Drops rows with step > `step` (atomically); returns how many were dropped."""
    if not os.path.exists(self.path):
      return 0
    with open(self.path) as f:
      lines = [l for l in f if l.strip()]
    keep = [l for l in lines if json.loads(l).get("step", 0) <= step]
    if len(keep) != len(lines):
      tmp = self.path + ".tmp"
      with open(tmp, "w") as f:
        f.writelines(keep)
      os.replace(tmp, self.path)
    return len(lines) - len(keep)

  def write(self, row: dict) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")

  def rows(self) -> list[dict]:
    if not os.path.exists(self.path):
      return []
    with open(self.path) as f:
      return [json.loads(l) for l in f if l.strip()]
