"""Stage 1 (docs/method.md §1): the action expert on observation-free forward-kinematics data.

Data sources (`config.data.source`):
  'generated'  smooth random Panda joint trajectories + forward kinematics, sampled *inside*
               the jitted train step (no host round-trip, unlimited data);
  'demos'      the paper's source: (joint, pose) windows of a robomimic/MimicGen HDF5.
Signals (`config.data.signal`, §1.3): 'jp' (joints + gripper, 8-D), 'eepose' (the pose itself,
10-D), 'none' (zeros: an unconditional trajectory model).

Normalisation (limits, §1.1, §6): the target's 3 position dims use the fixed workspace box
shared with stage 2 (`config.data.position_box`), so a frozen backbone sees the same action
scale in both stages, and the FK generator keeps its via-points in that box. rot6d and
gripper stay raw. The joint condition uses the Panda's joint limits; eepose conditions use
the target's scheme. `config.data.normalization='paper'` selects the reference's scheme
instead: condition and all 10 target dims by the training data's min/max (for generated
data, over a fixed sample of 16 384 windows), to measure whether the difference matters
(docs/results/README.md, table `normalization`).

Evaluation: sampled end-effector trajectories for held-out generated windows vs the true FK,
as mean position error (mm) and rotation error (deg), next to the trivial baseline that
predicts the data's mean pose.
"""
from __future__ import annotations

import logging
import time

import jax
import jax.numpy as jnp
import numpy as np

from decoupled_jax.backbones import expert_interface
from decoupled_jax.data import rotation
from decoupled_jax.data.normalizer import FieldStats, LimitsNormalizer
from decoupled_jax.heads import make_head
from decoupled_jax.kinematics import trajectories
from decoupled_jax.pipelines import common
from decoupled_jax.training import sharding
from decoupled_jax.training.policy import ACTION_DIM, make_sample_fn, policy_from_config
from decoupled_jax.training.stage import Stage

COND_KEY = "cond"


def stage1_normalizer(signal: str, joint_lower, joint_upper, box, *, scheme: str = "ours",
                      sample=None) -> LimitsNormalizer:
  """Stage 1's condition/target normaliser. `scheme='ours'`: see the module docstring;
  `scheme='paper'`: min/max of `sample = (cond, target)` (arrays (..., Dc), (..., 10)) on
  every dim, the condition unnormalised for signal 'none' (zeros), as the reference does."""
  if scheme == "paper":
    cond, target = (np.asarray(a, np.float32) for a in sample)
    data = {"actions": target.reshape(-1, target.shape[-1])}
    if signal != "none":
      data[COND_KEY] = cond.reshape(-1, cond.shape[-1])
    return LimitsNormalizer.fit(data, {k: None for k in data})
  if scheme != "ours":
    raise ValueError(f"config.data.normalization={scheme!r}: 'ours' or 'paper'")
  lo, hi = (np.asarray(b, np.float32) for b in box)
  stats = {"actions": FieldStats.create(lo, hi, dims=slice(0, 3))}
  if signal == "jp":
    jlo = np.concatenate([np.asarray(joint_lower, np.float32), [-1.0]]).astype(np.float32)
    jhi = np.concatenate([np.asarray(joint_upper, np.float32), [1.0]]).astype(np.float32)
    stats[COND_KEY] = FieldStats.create(jlo, jhi)
  elif signal == "eepose":
    stats[COND_KEY] = FieldStats.create(lo, hi, dims=slice(0, 3))
  return LimitsNormalizer.from_stats(stats)


def fk_window_config(config) -> trajectories.FKWindowConfig:
  box = tuple(tuple(float(v) for v in b) for b in config.data.position_box)
  return trajectories.FKWindowConfig.from_any(dict(
      config.data.fk, horizon=int(config.data.horizon), signal=config.data.signal,
      workspace_box=box))


def pose_errors(pred, true):
  """Mean position error (mm) and rotation error (deg) of unnormalised 10-D trajectories."""
  pos_mm = 1000.0 * np.linalg.norm(pred[..., :3] - true[..., :3], axis=-1)
  ang = rotation.rotation_angle_between(rotation.rot6d_to_matrix(pred[..., 3:9]),
                                        rotation.rot6d_to_matrix(true[..., 3:9]))
  grip = np.mean(np.sign(pred[..., 9]) == np.sign(true[..., 9]))
  return {"pos_err_mm": float(pos_mm.mean()), "rot_err_deg": float(np.degrees(ang).mean()),
          "gripper_acc": float(grip)}


def mean_pose_baseline(train_target, eval_target):
  """The trivial predictor: the data's mean pose (per horizon step) for every window."""
  mean = train_target.mean(axis=0)
  m = rotation.rot6d_to_matrix(mean[..., 3:9])          # Gram-Schmidt projection to SO(3)
  mean = np.concatenate([mean[..., :3], rotation.matrix_to_rot6d(m), np.sign(mean[..., 9:])
                         + (mean[..., 9:] == 0)], -1)
  return pose_errors(np.broadcast_to(mean, eval_target.shape), eval_target)


def make_stage(config) -> Stage:
  horizon, batch, signal = int(config.data.horizon), int(config.train.batch_size), config.data.signal
  fk_cfg = fk_window_config(config)
  sampler = trajectories.make_fk_window_sampler(fk_cfg)
  scheme = config.data.normalization
  data = sample = None
  if config.data.source == "demos":
    from decoupled_jax.kinematics.demo_pairs import load_demo_pairs
    data = load_demo_pairs(config.data.dataset, signal=signal, format=config.data.format,
                           key_map=config.data.key_map.to_dict())
    sample = (data.fields["cond"], data.fields["target"])
  elif scheme == "paper":   # the generated data's limits, from a fixed sample of windows
    sample = sampler(jax.random.PRNGKey(30_000 + config.seed), 16_384)
  norm = stage1_normalizer(signal, sampler.info.joint_lower, sampler.info.joint_upper,
                           config.data.position_box, scheme=scheme, sample=sample)
  norm_fields = [f for f in norm.fields if f in (COND_KEY, "actions")]

  def normalise(cond, target):
    d = norm.normalize({COND_KEY: cond, "actions": target}, fields=norm_fields)
    return {"obs": {COND_KEY: d[COND_KEY]}, "actions": d["actions"]}

  cond_dim = fk_cfg.cond_dim
  if config.data.source == "generated":
    host_batches = None
    fk_params = sampler.params

    def device_batch_fn(rng):
      cond, target = sampler.sample_pure(rng, fk_params, batch)
      return normalise(cond, target)
  else:
    from decoupled_jax.kinematics.demo_pairs import gather_windows
    cond_dim = data.fields["cond"].shape[-1]
    device_batch_fn = None

    rows = sharding.process_rows(batch)

    def host_batches(start):
      step = start
      while True:   # global batch k is a function of (seed, k); this process's rows
        t = np.random.default_rng((config.seed, step)).integers(0, data.num_frames, size=batch)
        cond, target = gather_windows(data, horizon, t[rows])
        yield jax.tree.map(np.asarray, normalise(cond, target))
        step += 1

  policy = policy_from_config(config, lowdim_keys=(COND_KEY,))
  head = make_head(config.head)
  expert = expert_interface(policy.backbone)
  meta = {"config": common.config_to_dict(config), "normalizer": norm.to_dict(),
          "backbone": config.backbone.name, "head": config.head.type, "signal": signal,
          "source": config.data.source, "obs_keys": [COND_KEY], "cond_dim": cond_dim,
          "horizon": horizon}

  # Held-out generated windows (fixed seeds never used for training batches).
  eval_cond, eval_target = (np.asarray(a) for a in sampler(
      jax.random.PRNGKey(10_000 + config.seed), int(config.eval.num_windows)))
  baseline = None
  sample_fn = jax.jit(make_sample_fn(policy, head, (horizon, ACTION_DIM)))
  eval_obs = normalise(eval_cond, eval_target)["obs"]

  def evaluate(params, step):
    nonlocal baseline
    if baseline is None:
      ref_target = np.asarray(sampler(jax.random.PRNGKey(20_000 + config.seed), 4096)[1])
      baseline = mean_pose_baseline(ref_target, eval_target)
    t0 = time.time()
    pred = np.asarray(sample_fn(params, eval_obs, jax.random.PRNGKey(step)))
    out = pose_errors(np.asarray(norm.unnormalize_field("actions", pred)), eval_target)
    out.update({f"baseline_{k}": v for k, v in baseline.items()},
               sample_time_s=time.time() - t0)
    logging.info("stage-1 eval @%d: pos %.1f mm (baseline %.1f), rot %.2f deg (baseline %.2f)",
                 step, out["pos_err_mm"], baseline["pos_err_mm"], out["rot_err_deg"],
                 baseline["rot_err_deg"])
    return out

  def final_evaluate(params, workdir, step):
    return evaluate(params, step) if len(eval_cond) else {}

  return Stage(name="pretrain", policy=policy, head=head,
               example_obs={COND_KEY: jnp.zeros((1, horizon, cond_dim), jnp.float32)},
               action_shape=(horizon, ACTION_DIM), meta=meta,
               no_weight_decay=expert.no_weight_decay_patterns,
               host_batches=host_batches, device_batch_fn=device_batch_fn,
               evaluate=evaluate, final_evaluate=final_evaluate)
