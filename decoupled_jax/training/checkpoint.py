"""Orbax checkpoints with separate items, atomic by construction (orbax writes to a
temporary directory and renames it when complete; unfinished `*.orbax-checkpoint-tmp-*`
folders left by a killed save are ignored).

Items of each step:
  state   the full TrainState (params, optimizer state, EMA, step): for `--resume`
  params  inference params (EMA of trainable leaves + frozen leaves): what stage 2, the
          evaluator, exports and servers load, without touching optimizer state
  meta    JSON: the config, normalizer stats, stage, shapes (`inference.py` needs nothing else)

Reading falls back to the newest *intact* step: a step whose files are damaged is named in
one log line (step and file) and the previous one is used; never a silent restart. The
aftermath of a failed orbax read or write (tracebacks that asyncio, tensorstore's callbacks
and orbax's threads print after the error was already raised to us) is silenced:
`_silence_orbax_aftermath`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import traceback
from typing import Callable, Optional

import jax
import orbax.checkpoint as ocp

from decoupled_jax.errors import CheckpointError
from decoupled_jax.training import workdir as workdir_lib

log = logging.getLogger(__name__)
ITEMS = ("state", "params", "meta")


def _in_orbax(exc: Optional[BaseException], obj=None) -> bool:
  """Whether an exception was raised in orbax's code (or `obj` is an orbax coroutine/task)."""
  try:
    code = getattr(obj, "cr_code", None)
    if code is None and callable(getattr(obj, "get_coro", None)):
      code = getattr(obj.get_coro(), "cr_code", None)
    if code is not None and "/orbax/" in code.co_filename:
      return True
    tb = exc.__traceback__ if exc is not None else None
    return any("/orbax/" in frame.f_code.co_filename for frame, _ in traceback.walk_tb(tb))
  except Exception:  # noqa: BLE001 -- called from hooks, which must not fail
    return False


# Set once a save raised to us: orbax's other threads of that save may still be running (and
# fail at interpreter exit); what they log is the same failure again.
_SAVE_FAILED = threading.Event()


class _DropOrbaxAftermath(logging.Filter):
  """asyncio: 'Task exception was never retrieved' for orbax's read/write tasks whose error
  orbax already raised. absl (orbax logs through it): a background save that failed for lack
  of space, logged with its traceback by every orbax thread that saw it (the trainer reports
  it in one line, `workdir.disk_full`), and anything the stragglers of a failed save log."""

  def filter(self, record):
    err = record.exc_info[1] if record.exc_info else None
    if record.name == "asyncio":
      return not ("/orbax/" in record.getMessage() or _in_orbax(err))
    if "/orbax/" not in record.pathname:
      return True
    if _SAVE_FAILED.is_set() and record.levelno >= logging.WARNING:
      return False
    if err is None:
      err = RuntimeError(record.getMessage())
    return workdir_lib.no_space(err) is None


_FILTER = _DropOrbaxAftermath()


def _unraisable_hook(unraisable):
  """Drops what a failed orbax read leaves behind after it raised: tensorstore callbacks that
  find orbax's per-call event loop closed ('Event loop is closed', no object), and orbax
  coroutines collected with their (already reported) exception."""
  exc = unraisable.exc_value
  if (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"
      and unraisable.object is None) or _in_orbax(exc, unraisable.object):
    return
  _unraisable_hook.previous(unraisable)


_unraisable_hook.previous = sys.__unraisablehook__

def _silence_orbax_aftermath() -> None:
  """Idempotent; re-installs the hook if someone replaced it since."""
  for name in ("asyncio", "absl"):
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
      logger.addFilter(_FILTER)
  if sys.unraisablehook is not _unraisable_hook:
    _unraisable_hook.previous = sys.unraisablehook
    sys.unraisablehook = _unraisable_hook


@contextlib.contextmanager
def _quiet_restore():
  """A failed orbax read logs dozens of interleaved asyncio/absl tracebacks before raising;
  the raised error is reported instead, in one line."""
  names = ("asyncio", "absl", "orbax", "tensorstore", "jax._src.distributed")
  saved = {n: logging.getLogger(n).level for n in names}
  for n in names:
    logging.getLogger(n).setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    for n, lvl in saved.items():
      logging.getLogger(n).setLevel(lvl)


def _describe_failure(step_dir: str, item: str, err: BaseException) -> str:
  """'<file>: <reason>' for the first damaged file of an item, best effort: orbax wraps the
  storage error (which names the array and file) in a generic one, so report the innermost."""
  item_dir = os.path.join(step_dir, item)
  if not os.path.isdir(item_dir):
    return f"{item_dir}: missing"
  if item != "meta" and not os.path.exists(os.path.join(item_dir, "_METADATA")):
    return f"{os.path.join(item_dir, '_METADATA')}: missing"
  chain, e = [], err
  while e is not None and len(chain) < 20:
    chain.append(e)
    e = e.__cause__ or e.__context__
  inner = chain[-1]
  text = " ".join(str(inner).split()) or type(inner).__name__
  return f"{item_dir}: {type(inner).__name__}: {text[:300]}"


class Checkpointer:

  def __init__(self, directory: str, *, max_to_keep: Optional[int] = 3, read_only: bool = False,
               async_save: bool = False):
    """async_save: `save` returns once the arrays are copied to host memory and the files are
    written in the background (training continues); `wait`/`close` block until done."""
    _silence_orbax_aftermath()
    _SAVE_FAILED.clear()
    self.directory = os.path.abspath(directory)
    self.async_save = bool(async_save) and not read_only
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                           read_only=read_only,
                                           enable_async_checkpointing=self.async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state, params, meta: dict) -> None:
    """Raises a failure of the previous (async) save, or of this one when synchronous."""
    with _saving():
      self.manager.save(int(step), args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          params=ocp.args.StandardSave(params),
          meta=ocp.args.JsonSave(meta)), force=True)
      if not self.async_save:
        self.manager.wait_until_finished()

  def wait(self) -> None:
    with _saving():
      self.manager.wait_until_finished()

  def _newest_intact(self, read: Callable[[int], object], item: str,
                     step: Optional[int] = None, move_aside: bool = False):
    """(step, read(step)) for `step`, or else the newest step `read` succeeds on; each
    unreadable newer step is named in one warning line (and moved aside with `move_aside`)."""
    steps = [step] if step is not None else self.all_steps()[::-1]
    if not steps:
      raise CheckpointError(f"no checkpoint found in {self.directory}")
    failures = []
    for s in steps:
      try:
        with _quiet_restore():
          value = read(s)
      except Exception as e:  # noqa: BLE001 -- any read error marks the step as damaged
        failures.append((s, f"step {s} is unreadable "
                            f"({_describe_failure(self._step_dir(s), item, e)})"))
        continue
      for bad, text in failures:
        aside = f"; moved step {bad} aside to {self._move_aside(bad)}" if move_aside else ""
        log.warning("%s; using step %d instead%s", text, s, aside)
      if move_aside and failures:
        self.manager.reload()
      return s, value
    raise CheckpointError(f"no intact checkpoint in {self.directory}: " +
                          "; ".join(text for _, text in failures))

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _move_aside(self, step: int) -> str:
    """Renames a damaged step to `<step>.damaged[N]` (kept for inspection, ignored by orbax)."""
    dst, n = self._step_dir(step) + ".damaged", 1
    while os.path.exists(dst):
      dst, n = f"{self._step_dir(step)}.damaged{n}", n + 1
    os.replace(self._step_dir(step), dst)
    return dst

  def restore_state(self, target_state, step: Optional[int] = None):
    """(step, state) of the newest intact step (or exactly `step`). Damaged newer steps are
    moved aside to `<step>.damaged` (kept for inspection, ignored by orbax) so training can
    write that step again."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target_state)
    return self._newest_intact(lambda s: self.manager.restore(
        s, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))).state,
        "state", step, move_aside=True)

  def restore_params(self, step: Optional[int] = None) -> tuple[dict, dict]:
    """Inference params onto this process's first device, whatever the devices the run
    that saved them had (a checkpoint of an 8-device run loads on a laptop)."""
    def read(s):
      target = _local_target(self.manager.item_metadata(s)["params"])
      out = self.manager.restore(s, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
      return dict(out.params), dict(out.meta)
    return self._newest_intact(read, "params", step)[1]

  def restore_meta(self, step: Optional[int] = None) -> dict:
    return self._newest_intact(lambda s: dict(self.manager.restore(s, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore())).meta), "meta", step)[1]

  def close(self):
    with _saving():
      self.manager.wait_until_finished()
      self.manager.close()


@contextlib.contextmanager
def _saving():
  try:
    yield
  except BaseException:
    _SAVE_FAILED.set()
    raise


def _local_target(metadata):
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                      metadata)


@contextlib.contextmanager
def _read_only(directory: str):
  if not os.path.isdir(directory):
    raise CheckpointError(f"checkpoint directory {directory} does not exist")
  ckpt = Checkpointer(directory, read_only=True, max_to_keep=None)
  try:
    yield ckpt
  finally:
    ckpt.close()


def load_inference_params(directory: str, step: Optional[int] = None) -> tuple[dict, dict]:
  """(params, meta) of a run's newest intact checkpoint (or `step`), read-only."""
  with _read_only(directory) as ckpt:
    return ckpt.restore_params(step)


def load_meta(directory: str, step: Optional[int] = None) -> dict:
  """Only the JSON meta item (config, normalizer stats, stage, shapes)."""
  with _read_only(directory) as ckpt:
    return ckpt.restore_meta(step)
