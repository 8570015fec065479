"""Orbax checkpoints with separate items, atomic by construction (orbax writes to a
temporary directory and renames it when complete; unfinished `*.orbax-checkpoint-tmp-*`
folders left by a killed save are ignored).

Items of each step:
  state   the full TrainState (params, optimizer state, EMA, step): for `--resume`
  params  inference params (EMA of trainable leaves + frozen leaves): what stage 2, the
          evaluator, exports and servers load, without touching optimizer state
  meta    JSON: the config, normalizer stats, stage, shapes (`inference.py` needs nothing else)

Reading falls back to the newest *intact* step: a step whose files are damaged is named in
one log line (step and file) and the previous one is used; never a silent restart.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Callable, Optional

import jax
import orbax.checkpoint as ocp

from decoupled_jax.errors import CheckpointError

log = logging.getLogger(__name__)
ITEMS = ("state", "params", "meta")


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
    self.manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        params=ocp.args.StandardSave(params),
        meta=ocp.args.JsonSave(meta)), force=True)
    if not self.async_save:
      self.manager.wait_until_finished()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def _newest_intact(self, read: Callable[[int], object], item: str,
                     step: Optional[int] = None):
    """(step, read(step)) for `step`, or else the newest step `read` succeeds on."""
    steps = [step] if step is not None else self.all_steps()[::-1]
    if not steps:
      raise CheckpointError(f"no checkpoint found in {self.directory}")
    failures = []
    for s in steps:
      try:
        with _quiet_restore():
          value = read(s)
      except Exception as e:  # noqa: BLE001 -- any read error marks the step as damaged
        failures.append(f"step {s} is unreadable ({_describe_failure(self._step_dir(s), item, e)})")
        continue
      for f in failures:
        log.warning("%s; using step %d instead", f, s)
      return s, value
    raise CheckpointError(f"no intact checkpoint in {self.directory}: " + "; ".join(failures))

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def restore_state(self, target_state, step: Optional[int] = None):
    """(step, state) of the newest intact step (or exactly `step`). Damaged newer steps are
    moved aside to `<step>.damaged` (kept for inspection, ignored by orbax) so training can
    write that step again."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target_state)
    restored, state = self._newest_intact(lambda s: self.manager.restore(
        s, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))).state,
        "state", step)
    newer = [s for s in self.all_steps() if s > restored]
    for s in newer:
      dst = self._step_dir(s) + ".damaged"
      n = 1
      while os.path.exists(dst):
        dst, n = f"{self._step_dir(s)}.damaged{n}", n + 1
      os.replace(self._step_dir(s), dst)
      log.warning("moved the damaged checkpoint step %d aside to %s", s, dst)
    if newer:
      self.manager.reload()
    return restored, state

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
    self.manager.wait_until_finished()
    self.manager.close()


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
