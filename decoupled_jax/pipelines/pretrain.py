"""Stage 1: pretrain the action expert on observation-free forward-kinematics data (spec §1).

Data sources (`config.data.source`):
  'generated'  smooth random Panda joint trajectories + MJX/JAX forward kinematics, sampled
               *inside* the jitted train step (no host round-trip, unlimited data);
  'demos'      the paper's source: (joint, pose) windows of a robomimic/MimicGen HDF5.
Signals (`config.data.signal`, spec §1.3): 'jp' (joints + gripper, 8-D), 'eepose' (the pose
itself, 10-D), 'none' (zeros: an unconditional trajectory model).

Normalisation (limits, spec §1.1): the target's 3 position dims use the fixed workspace box
shared with stage 2 (`config.data.position_box`, default the reference's MimicGen stats, which
cover the robosuite table-top workspace in the same world frame), so a frozen backbone sees
the same action scale in both stages; the FK generator keeps its via-points in that box.
rot6d and gripper stay raw. The joint condition uses
the Panda's joint limits; eepose conditions use the target's scheme.

Quality metric: sampled end-effector trajectories for held-out generated windows vs the
true FK, as mean position error (mm) and rotation error (deg), next to the trivial baseline
that predicts the mean pose of the data.
"""
from __future__ import annotations

import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from decoupled_jax.data import rotation
from decoupled_jax.data.normalizer import FieldStats, LimitsNormalizer
from decoupled_jax.kinematics import trajectories
from decoupled_jax.kinematics.demo_pairs import DemoPairWindowSampler, load_demo_pairs
from decoupled_jax.pipelines import common, finetune
from decoupled_jax.training import trainer
from decoupled_jax.training.policy import make_sample_fn

COND_KEY = "cond"


def stage1_normalizer(signal: str, joint_lower, joint_upper, box) -> LimitsNormalizer:
  pos = dict(min=np.asarray(box[0], np.float32), max=np.asarray(box[1], np.float32))
  stats = {"actions": FieldStats.create(pos["min"], pos["max"], dims=slice(0, 3))}
  if signal == "jp":
    lo = np.concatenate([np.asarray(joint_lower, np.float32), [-1.0]]).astype(np.float32)
    hi = np.concatenate([np.asarray(joint_upper, np.float32), [1.0]]).astype(np.float32)
    stats[COND_KEY] = FieldStats.create(lo, hi)
  elif signal == "eepose":
    stats[COND_KEY] = FieldStats.create(pos["min"], pos["max"], dims=slice(0, 3))
  elif signal != "none":
    raise ValueError(f"config.data.signal must be 'jp', 'eepose' or 'none', got {signal!r}")
  return LimitsNormalizer.from_stats(stats)


def _fk_config(config, box) -> trajectories.FKWindowConfig:
  fk = dict(config.data.get("fk", {}))
  fk.update(horizon=int(config.data.horizon), signal=config.data.signal)
  fk.setdefault("workspace_box", tuple(tuple(float(v) for v in b) for b in box))
  return trajectories.FKWindowConfig.from_any(fk)


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


def train_and_evaluate(config, workdir: str, *, resume: bool = False) -> dict:
  common.log_devices()
  os.makedirs(workdir, exist_ok=True)
  horizon, batch = int(config.data.horizon), int(config.train.batch_size)
  signal = config.data.signal
  box = finetune.position_box(config)
  fk_cfg = _fk_config(config, box)
  sampler = trajectories.make_fk_window_sampler(fk_cfg)
  norm = stage1_normalizer(signal, sampler.info.joint_lower, sampler.info.joint_upper, box)

  def normalise(cond, target):
    d = norm.normalize({COND_KEY: cond, "actions": target}, fields=list(
        f for f in norm.fields if f in (COND_KEY, "actions")))
    return {"obs": {COND_KEY: d[COND_KEY]}, "actions": d["actions"]}

  cond_dim = fk_cfg.cond_dim
  host_batches = device_batch_fn = None
  if config.data.source == "generated":
    fk_params = sampler.params
    def device_batch_fn(rng):
      cond, target = sampler.sample_pure(rng, fk_params, batch)
      return normalise(cond, target)
  elif config.data.source == "demos":
    data = load_demo_pairs(config.data.hdf5_path, signal=signal)
    demo_sampler = DemoPairWindowSampler(data, horizon)
    cond_dim = data.fields["cond"].shape[-1]
    def host_batches(start):
      step = start
      while True:
        cond, target = demo_sampler.sample(np.random.default_rng((config.seed, step)), batch)
        yield jax.tree.map(np.asarray, normalise(cond, target))
        step += 1
  else:
    raise ValueError(f"config.data.source must be 'generated' or 'demos', got {config.data.source!r}")

  policy, backbone = common.make_policy(config, lowdim_keys=(COND_KEY,))
  head = common.head_from_config(config)
  example_obs = {COND_KEY: jnp.zeros((1, horizon, cond_dim), jnp.float32)}
  meta = {"stage": "pretrain", "config": common.config_to_dict(config),
          "normalizer": norm.to_dict(), "backbone": config.backbone.name,
          "obs_keys": [COND_KEY], "cond_dim": cond_dim, "horizon": horizon}

  # Held-out generated windows (a fixed seed never used for training batches).
  eval_cond, eval_target = sampler(jax.random.PRNGKey(10_000 + config.seed),
                                   int(config.eval.num_windows))
  eval_cond, eval_target = np.asarray(eval_cond), np.asarray(eval_target)
  ref_cond, ref_target = sampler(jax.random.PRNGKey(20_000 + config.seed), 4096)
  baseline = mean_pose_baseline(np.asarray(ref_target), eval_target)
  sample_fn = jax.jit(make_sample_fn(policy, head, (horizon, common.ACTION_DIM)))
  eval_obs = normalise(eval_cond, eval_target)["obs"]

  def eval_fn(state, step):
    params = state.inference_params(config.ema.enabled)
    t0 = time.time()
    pred = np.asarray(sample_fn(params, eval_obs, jax.random.PRNGKey(step)))
    pred = np.asarray(norm.unnormalize_field("actions", pred))
    out = pose_errors(pred, eval_target)
    out.update({f"baseline_{k}": v for k, v in baseline.items()},
               sample_time_s=time.time() - t0)
    logging.info("stage-1 eval @%d: pos %.1f mm (baseline %.1f), rot %.2f deg (baseline %.2f)",
                 step, out["pos_err_mm"], baseline["pos_err_mm"], out["rot_err_deg"],
                 baseline["rot_err_deg"])
    return out

  result = trainer.train(
      config, workdir, policy=policy, head=head, example_obs=example_obs,
      action_shape=(horizon, common.ACTION_DIM),
      conditioning_patterns=common.conditioning_patterns(backbone),
      backbone_no_decay=common.backbone_no_decay(backbone), meta=meta,
      host_batches=host_batches, device_batch_fn=device_batch_fn, eval_fn=eval_fn, resume=resume,
      progress=config.get("progress", True))
  metrics = eval_fn(result.state, result.steps)
  summary = {"steps": result.steps, "wall_time_s": result.wall_time_s,
             "steps_per_s": result.steps_per_s, "compile_time_s": result.compile_time_s,
             "num_params": result.num_params, "num_trainable": result.num_trainable,
             "last_loss": result.last_loss, "checkpoint_dir": os.path.join(workdir, "checkpoints"),
             "eval": metrics}
  common.write_json(os.path.join(workdir, "stage1_summary.json"), summary)
  return summary
