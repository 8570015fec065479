"""Orbax checkpoints with separate items, atomic by construction (orbax writes to a
temporary directory and renames it when complete).

Items of each step:
  state   the full TrainState (params, optimizer state, EMA, step): for `--resume`
  params  inference params (EMA of trainable leaves + frozen leaves): what stage 2 and
          evaluation load, without touching optimizer state
  meta    JSON: the config, normalizer stats, frozen paths, backbone/head names
"""
from __future__ import annotations

import os
from typing import Optional

import jax
import orbax.checkpoint as ocp


class Checkpointer:

  def __init__(self, directory: str, *, max_to_keep: Optional[int] = 3, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                           read_only=read_only,
                                           enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "params", "meta"))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state, params, meta: dict) -> None:
    self.manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        params=ocp.args.StandardSave(params),
        meta=ocp.args.JsonSave(meta)), force=True)
    self.manager.wait_until_finished()

  def _step(self, step: Optional[int]) -> int:
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint found in {self.directory}")
    return step

  def restore_state(self, target_state, step: Optional[int] = None):
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target_state)
    return self.manager.restore(self._step(step), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract))).state

  def restore_params(self, step: Optional[int] = None) -> tuple[dict, dict]:
    out = self.manager.restore(self._step(step), args=ocp.args.Composite(
        params=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    return dict(out.params), dict(out.meta)

  def restore_meta(self, step: Optional[int] = None) -> dict:
    return dict(self.manager.restore(self._step(step), args=ocp.args.Composite(
        meta=ocp.args.JsonRestore())).meta)

  def close(self):
    self.manager.close()


def _read_only(directory: str) -> Checkpointer:
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
  return Checkpointer(directory, read_only=True, max_to_keep=None)


def load_inference_params(directory: str, step: Optional[int] = None) -> tuple[dict, dict]:
  """Loads (params, meta) from a run's checkpoint directory, read-only."""
  ckpt = _read_only(directory)
  try:
    return ckpt.restore_params(step)
  finally:
    ckpt.close()


def load_meta(directory: str, step: Optional[int] = None) -> dict:
  """Loads only the JSON meta item (config, normalizer stats) of a run's checkpoint."""
  ckpt = _read_only(directory)
  try:
    return ckpt.restore_meta(step)
  finally:
    ckpt.close()
