"""The training loop shared by every binary (stage 1, stage 2 decoupled, normal).

It owns what the binaries have in common: initialisation, the path-based freeze and the
stage-1 load, the jitted sharded train step with donated state, logging (TensorBoard,
`metrics.jsonl`, a progress bar), checkpoints and `--resume`. What differs per binary is the
batch source: host batches (an iterator of numpy dicts, e.g. demonstration windows) or an
on-device batch function fused into the jitted step (e.g. MJX forward-kinematics data).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Callable, Iterator, Optional

import jax
import numpy as np

from decoupled_jax.training import checkpoint as ckpt_lib
from decoupled_jax.training import optimizer as opt_lib
from decoupled_jax.training import partition
from decoupled_jax.training import sharding
from decoupled_jax.training.policy import Policy, init_policy
from decoupled_jax.training.train_state import create_train_state, make_train_step

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
  state: Any
  workdir: str
  steps: int
  wall_time_s: float
  steps_per_s: float           # excluding the first (compiling) step
  compile_time_s: float
  num_params: int
  num_trainable: int
  last_loss: float


def count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def run_key(config) -> jax.Array:
  """The run's base key. Default impl 'unsafe_rbg': on XLA:CPU threefry makes dropout masks
  ~8x slower to generate (and much slower to compile) than the RngBitGenerator; set
  `config.rng_impl='threefry2x32'` for bit-reproducibility across partitionings."""
  return jax.random.key(int(config.seed), impl=config.get("rng_impl", "unsafe_rbg"))


def build_initial_state(config, policy: Policy, example_obs, action_shape,
                        conditioning_patterns, total_steps: int, backbone_no_decay=()):
  """Initial params (+ stage-1 load), the frozen set, the optimizer and the TrainState."""
  rng = run_key(config)
  params = init_policy(policy, jax.random.fold_in(rng, 0), example_obs, action_shape)
  freeze = config.freeze
  frozen = partition.frozen_paths(
      params, mode=freeze.mode, conditioning_patterns=conditioning_patterns,
      extra_trainable=tuple(freeze.get("extra_trainable", ())),
      extra_frozen=tuple(freeze.get("extra_frozen", ())))
  if freeze.get("init_from", ""):
    source, _ = ckpt_lib.load_inference_params(freeze.init_from)
    params, copied = partition.copy_by_path(
        params, source, skip_patterns=conditioning_patterns,
        copy_matching_biases=bool(freeze.get("copy_conditioning_biases", True)),
        source_name=f"stage-1 checkpoint {freeze.init_from}")
    log.info("copied %d backbone leaves from %s", len(copied), freeze.init_from)
  elif freeze.mode == "backbone":
    log.warning("freeze.mode='backbone' without freeze.init_from: the *random* backbone is "
                "frozen (the random_frozen control of spec §1.3)")
  trainable, _ = partition.split(params, frozen)
  tx, schedule = opt_lib.make_optimizer(config.optimizer, trainable, total_steps,
                                       backbone_no_decay)
  return create_train_state(params, frozen, tx), tx, schedule


def train(config, workdir: str, *, policy: Policy, head, example_obs, action_shape,
          conditioning_patterns, meta: dict, backbone_no_decay=(),
          host_batches: Optional[Callable[[int], Iterator[dict]]] = None,
          device_batch_fn: Optional[Callable[[jax.Array], dict]] = None,
          eval_fn: Optional[Callable[[Any, int], dict]] = None,
          resume: bool = False, progress: bool = True, devices=None,
          stop_at: Optional[int] = None) -> TrainResult:
  """Runs `config.train.num_steps` steps. Exactly one of host_batches/device_batch_fn.

  host_batches(start_step) yields normalised numpy batches (global batch on one host, the
  host-local slice on several); device_batch_fn(rng) builds a batch inside the jitted step.
  devices: the mesh's devices (default: all). stop_at: leave the loop after this step (as
  if interrupted; the schedule still spans config.train.num_steps), e.g. to time-box a run.
  """
  if (host_batches is None) == (device_batch_fn is None):
    raise ValueError("pass exactly one of host_batches and device_batch_fn")
  os.makedirs(workdir, exist_ok=True)
  total_steps = int(config.train.num_steps)
  mesh = sharding.make_mesh(devices)
  sharding.check_batch_size(int(config.train.batch_size), mesh)

  state, tx, schedule = build_initial_state(config, policy, example_obs, action_shape,
                                            conditioning_patterns, total_steps, backbone_no_decay)
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                       max_to_keep=config.train.get("max_checkpoints", 2))
  latest = checkpointer.latest_step()
  if latest is not None and not resume:
    raise FileExistsError(
        f"{workdir} already holds checkpoints (latest step {latest}); pass --resume to "
        f"continue that run or choose a new --workdir (nothing was overwritten)")
  if resume and latest is not None:
    state = checkpointer.restore_state(state)
    log.info("resumed from step %d", int(state.step))
  state = sharding.replicate(state, mesh)

  step_fn = make_train_step(policy, head, tx, ema_power=config.ema.power,
                            ema_max_decay=config.ema.max_decay, ema_enabled=config.ema.enabled)
  repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  if device_batch_fn is not None:
    def fused_step(state, rng):
      batch = device_batch_fn(jax.random.fold_in(jax.random.fold_in(rng, 1), state.step))
      batch = jax.lax.with_sharding_constraint(batch, data)
      return step_fn(state, batch, rng)
    jit_step = jax.jit(fused_step, in_shardings=(repl, repl), out_shardings=(repl, repl),
                       donate_argnums=(0,))
  else:
    jit_step = jax.jit(step_fn, in_shardings=(repl, data, repl), out_shardings=(repl, repl),
                       donate_argnums=(0,))

  base_rng = sharding.replicate(jax.random.fold_in(run_key(config), 2), mesh)
  start = int(state.step)
  writer = _SummaryWriter(os.path.join(workdir, "tensorboard"))
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  batches = host_batches(start) if host_batches is not None else None
  num_params, num_trainable = count(state.params), count(state.ema)

  def save(state):
    checkpointer.save(int(state.step), state, state.inference_params(config.ema.enabled),
                      dict(meta, step=int(state.step)))

  end = total_steps if stop_at is None else min(int(stop_at), total_steps)
  bar = _progress(range(start, end), progress, desc=os.path.basename(workdir.rstrip("/")))
  t_start, compile_time, t_after_first, last_loss = time.time(), 0.0, None, float("nan")
  for step in bar:
    t0 = time.time()
    if batches is not None:
      state, metrics = jit_step(state, sharding.shard_batch(next(batches), mesh), base_rng)
    else:
      state, metrics = jit_step(state, base_rng)
    if t_after_first is None:
      jax.block_until_ready(state)
      compile_time, t_after_first = time.time() - t0, time.time()
    done = step + 1
    if done % config.train.log_every == 0 or done == total_steps:
      m = {k: float(v) for k, v in jax.device_get(metrics).items()}
      m["lr"] = float(schedule(done - 1))
      last_loss = m["loss"]
      writer.scalars(done, {f"train/{k}": v for k, v in m.items()})
      with open(metrics_path, "a") as f:
        f.write(json.dumps({"step": done, "time": time.time() - t_start, **m}) + "\n")
      if hasattr(bar, "set_postfix"):
        bar.set_postfix(loss=f"{m['loss']:.4f}")
    if eval_fn is not None and config.train.get("eval_every", 0) and (
        done % config.train.eval_every == 0 or done == total_steps):
      ev = eval_fn(state, done)
      writer.scalars(done, {f"eval/{k}": v for k, v in ev.items() if np.isscalar(v)})
      with open(metrics_path, "a") as f:
        f.write(json.dumps({"step": done, "eval": ev}) + "\n")
    if done % config.train.checkpoint_every == 0 or done == end:
      save(state)
  jax.block_until_ready(state)
  wall = time.time() - t_start
  n_timed = end - start - 1
  sps = n_timed / (time.time() - t_after_first) if (t_after_first and n_timed > 0) else float("nan")
  if checkpointer.latest_step() != int(state.step):
    save(state)
  checkpointer.close()
  writer.close()
  return TrainResult(state, workdir, int(state.step), wall, sps, compile_time, num_params,
                     num_trainable, last_loss)


class _SummaryWriter:
  """TensorBoard scalars via tensorboardX (no TensorFlow needed); a no-op if absent."""

  def __init__(self, logdir):
    try:
      from tensorboardX import SummaryWriter
      self._w = SummaryWriter(logdir)
    except ImportError:  # pragma: no cover
      self._w = None

  def scalars(self, step, values):
    if self._w is not None:
      for k, v in values.items():
        self._w.add_scalar(k, v, step)

  def close(self):
    if self._w is not None:
      self._w.close()


def _progress(it, enabled, desc):
  if not enabled:
    return it
  try:
    from tqdm import tqdm
    return tqdm(it, desc=desc, dynamic_ncols=True, mininterval=2.0)
  except ImportError:  # pragma: no cover
    return it
