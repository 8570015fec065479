"""The one training loop (stage 1, stage 2 decoupled / normal / random-frozen).

`train(config, workdir, stage)` owns everything the stages share: initialisation, the
stage's weight loader and freeze rule, the optimizer over trainable leaves, the jitted
sharded train step with donated state, logging (TensorBoard, `metrics.jsonl`, progress bar),
checkpoints and `--resume` (newest intact step; logs truncated to it). What differs per stage
arrives in the `Stage` object (`training/stage.py`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from typing import Any, Optional

import jax
import numpy as np

from decoupled_jax import util
from decoupled_jax.backbones.paths import count_params
from decoupled_jax.training import checkpoint as ckpt_lib
from decoupled_jax.training import optimizer as opt_lib
from decoupled_jax.training import partition
from decoupled_jax.training import sharding
from decoupled_jax.training.policy import init_policy
from decoupled_jax.training.prefetch import Prefetcher
from decoupled_jax.training.stage import Stage
from decoupled_jax.training.train_state import create_train_state, make_train_step
from decoupled_jax.training.workdir import MetricsLog, checkpoint_steps, disk_full

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
  load_report: dict


def run_key(config) -> jax.Array:
  """The run's base key. `config.rng_impl` defaults to 'unsafe_rbg': on XLA:CPU threefry makes
  dropout masks ~8x slower to generate (and much slower to compile) than the RngBitGenerator;
  'threefry2x32' gives bit-reproducibility across partitionings."""
  return jax.random.key(int(config.seed), impl=config.rng_impl)


def build_initial_state(config, stage: Stage, *, load_weights: bool = True):
  """Initial params (+ the stage's weight loader), the frozen set, optimizer, TrainState.
  A resumed run skips the loader: its checkpoint replaces every value anyway."""
  rng = run_key(config)
  params = init_policy(stage.policy, jax.random.fold_in(rng, 0), stage.example_obs,
                       stage.action_shape)
  report = {}
  if load_weights:
    params, report = stage.weights.load(params)
  frozen = stage.freeze.frozen_paths(params)
  trainable, _ = partition.split(params, frozen)
  tx, schedule = opt_lib.make_optimizer(config.optimizer, trainable,
                                       total_steps(config, stage), stage.no_weight_decay)
  return create_train_state(params, frozen, tx), tx, schedule, report


def total_steps(config, stage: Stage) -> int:
  return int(stage.num_steps or config.train.num_steps)


def check_workdir(workdir: str, resume: bool) -> None:
  """Refuses a workdir that holds checkpoints unless resuming (before any expensive work)."""
  steps = checkpoint_steps(os.path.join(workdir, "checkpoints"))
  if steps and not resume:
    raise FileExistsError(
        f"{workdir} already holds checkpoints (latest step {steps[-1]}); pass --resume to "
        f"continue that run or choose a new --workdir (nothing was overwritten)")


def train(config, workdir: str, stage: Stage, *, resume: bool = False, devices=None,
          stop_at: Optional[int] = None) -> TrainResult:
  """Runs `total_steps(config, stage)` steps of `stage` in `workdir`.

  resume: continue from the newest intact checkpoint (without it, a workdir that holds
  checkpoints is refused). devices: the mesh's devices (default: all). stop_at: leave the
  loop after this step as if interrupted (the schedule still spans num_steps).

  A write that fails for lack of space (a checkpoint, in orbax's background thread or not,
  metrics.jsonl, TensorBoard) raises `errors.DiskFullError`: one line naming the file and the
  newest intact checkpoint step, to rerun from with --resume.
  """
  try:
    return _train(config, workdir, stage, resume=resume, devices=devices, stop_at=stop_at)
  except Exception as e:
    full = disk_full(e, os.path.join(workdir, "checkpoints"), default_path=workdir)
    if full is None or full is e:
      raise
    raise full from e


def _train(config, workdir, stage, *, resume, devices, stop_at) -> TrainResult:
  os.makedirs(workdir, exist_ok=True)
  num_steps = total_steps(config, stage)
  mesh = sharding.make_mesh(devices)
  sharding.check_batch_size(int(config.train.batch_size), mesh)

  check_workdir(workdir, resume)
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                       max_to_keep=int(config.train.max_checkpoints),
                                       async_save=bool(config.train.async_checkpoints))
  latest = checkpointer.latest_step()
  resuming = resume and latest is not None
  state, tx, schedule, report = build_initial_state(config, stage, load_weights=not resuming)
  report_path = os.path.join(workdir, "weights.json")
  if resuming:
    restored_step, state = checkpointer.restore_state(state)
    log.info("resumed from step %d", restored_step)
    if os.path.exists(report_path):
      with open(report_path) as f:
        report = json.load(f)
  elif sharding.is_primary():   # which leaves came from where (docs/method.md §2.1)
    util.write_json(report_path, dict(report, frozen=sorted(state.frozen)), indent=1)
  state = sharding.replicate(state, mesh)
  start = int(state.step)

  step_fn = make_train_step(stage.policy, stage.head, tx, ema_power=config.ema.power,
                            ema_max_decay=config.ema.max_decay, ema_enabled=config.ema.enabled)
  repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  if stage.device_batch_fn is not None:
    def fused_step(state, rng):
      batch = stage.device_batch_fn(jax.random.fold_in(jax.random.fold_in(rng, 1), state.step))
      batch = jax.lax.with_sharding_constraint(batch, data)
      return step_fn(state, batch, rng)
    jit_step = jax.jit(fused_step, in_shardings=(repl, repl), out_shardings=(repl, repl),
                       donate_argnums=(0,))
  else:
    jit_step = jax.jit(step_fn, in_shardings=(repl, data, repl), out_shardings=(repl, repl),
                       donate_argnums=(0,))

  base_rng = sharding.replicate(jax.random.fold_in(run_key(config), 2), mesh)
  primary = sharding.is_primary()   # process 0 writes logs and runs evaluations
  metrics_log = MetricsLog(os.path.join(workdir, "metrics.jsonl")) if primary else None
  if primary:
    dropped = metrics_log.truncate_after(start)
    if dropped:
      log.info("dropped %d metric rows after the restored step %d", dropped, start)
  writer = _SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=start + 1,
                          enabled=primary)
  batches = None
  if stage.host_batches is not None:
    shard = lambda b: sharding.shard_batch(b, mesh)  # noqa: E731
    if int(config.train.prefetch) > 0:
      batches = Prefetcher(stage.host_batches(start), shard, int(config.train.prefetch))
    else:
      batches = map(shard, stage.host_batches(start))
  num_params, num_trainable = count_params(state.params), count_params(state.ema)
  use_ema = bool(config.ema.enabled)

  def save(state):
    checkpointer.save(int(state.step), state, state.inference_params(use_ema),
                      dict(stage.meta, stage=stage.name, step=int(state.step)))

  end = num_steps if stop_at is None else min(int(stop_at), num_steps)
  bar = _progress(range(start, end), bool(config.progress) and primary,
                  desc=os.path.basename(workdir.rstrip("/")))
  t_start, compile_time, t_after_first, last_loss = time.time(), 0.0, None, float("nan")
  data_wait, t_interval = 0.0, time.time()
  log_every, ckpt_every, eval_every = (int(config.train.log_every),
                                       int(config.train.checkpoint_every),
                                       int(config.train.eval_every))
  try:
    for step in bar:
      t0 = time.time()
      if batches is not None:
        t_wait = time.time()
        batch = next(batches)
        data_wait += time.time() - t_wait
        state, metrics = jit_step(state, batch, base_rng)
      else:
        state, metrics = jit_step(state, base_rng)
      if t_after_first is None:
        jax.block_until_ready(state)
        compile_time, t_after_first = time.time() - t0, time.time()
      done = step + 1
      if done % log_every == 0 or done == num_steps:
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}
        m["lr"] = float(schedule(done - 1))
        if batches is not None:   # fraction of the interval spent waiting for host data
          m["data_wait_frac"] = data_wait / max(time.time() - t_interval, 1e-9)
          data_wait, t_interval = 0.0, time.time()
        last_loss = m["loss"]
        if not np.isfinite(last_loss):
          raise FloatingPointError(f"training loss became {last_loss} at step {done} in "
                                   f"{workdir}; the last checkpoint is intact")
        writer.scalars(done, {f"train/{k}": v for k, v in m.items()})
        if primary:
          metrics_log.write({"step": done, "time": time.time() - t_start, **m})
        if hasattr(bar, "set_postfix"):
          bar.set_postfix(loss=f"{m['loss']:.4f}")
      if primary and stage.evaluate is not None and eval_every and (
          done % eval_every == 0 or done == num_steps):
        ev = stage.evaluate(sharding.to_host(state.inference_params(use_ema)), done)
        writer.scalars(done, {f"eval/{k}": v for k, v in ev.items() if np.isscalar(v)})
        metrics_log.write({"step": done, "eval": ev})
      if done % ckpt_every == 0 or done == end:
        save(state)
    jax.block_until_ready(state)
    checkpointer.wait()
    if checkpointer.latest_step() != int(state.step):
      save(state)
  finally:
    _close_all([batches.close] if isinstance(batches, Prefetcher) else [],
               checkpointer.close, writer.close)
  wall = time.time() - t_start
  n_timed = end - start - 1
  sps = n_timed / (time.time() - t_after_first) if (t_after_first and n_timed > 0) else float("nan")
  return TrainResult(state, workdir, int(state.step), wall, sps, compile_time, num_params,
                     num_trainable, last_loss, report)


def _close_all(first, *closers) -> None:
  """Calls every closer even if one fails (then raises the first failure)."""
  error = None
  for close in [*first, *closers]:
    try:
      close()
    except Exception as e:  # noqa: BLE001 -- re-raised below
      error = error or e
  if error is not None:
    raise error


class _SummaryWriter:
  """TensorBoard scalars in tensorboardX's event-file format (no TensorFlow needed), written
  and flushed in the calling thread: a failed write (a full disk) raises here, naming the file,
  instead of killing tensorboardX's writer thread (whose bounded queue then blocks training).
  `purge_step` makes TensorBoard drop events at or after it from earlier files of a resumed run.
  """

  def __init__(self, logdir, purge_step=None, enabled=True):
    self._w, self.path = None, logdir
    if enabled:
      from tensorboardX.event_file_writer import EventsWriter
      from tensorboardX.proto.event_pb2 import Event, SessionLog
      self._event = Event
      with self._naming_errors():
        os.makedirs(logdir, exist_ok=True)
        self._w = EventsWriter(os.path.join(logdir, "events"))
      self.path = getattr(self._w, "_file_name", logdir)
      if purge_step is not None:
        self._write([Event(step=purge_step, session_log=SessionLog(status=SessionLog.START))])

  @contextlib.contextmanager
  def _naming_errors(self):
    try:
      yield
    except OSError as e:   # a failed write()/flush() does not name its file
      if e.filename is None:
        e.filename = self.path
      raise

  def _write(self, events):
    with self._naming_errors():
      for event in events:
        event.wall_time = time.time()
        self._w.write_event(event)
      self._w.flush()

  def scalars(self, step, values):
    if self._w is not None and values:
      from tensorboardX.summary import scalar
      self._write([self._event(step=int(step), summary=scalar(k, float(v)))
                   for k, v in values.items()])

  def close(self):
    if self._w is not None:
      w, self._w = self._w, None
      with self._naming_errors():
        w.close()


def _progress(it, enabled, desc):
  if not enabled:
    return it
  from tqdm import tqdm
  return tqdm(it, desc=desc, dynamic_ncols=True, mininterval=2.0)
