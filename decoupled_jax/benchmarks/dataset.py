"""Benchmark `dataset` (stage 2): any supported dataset, any robot, no simulator.

`config.data.dataset` in `config.data.format` (robomimic HDF5, RLDS, LeRobot v3.0/v2.1) with
`config.data.key_map` naming its columns, and `config.robot` (kinematics/robot.py) saying what
the actions are (`robot.action_space`):
  'joint_pos'  absolute joint positions + gripper(s), `robot.info.joint_dim` wide (what ALOHA,
               SO-100/101, Koch and most LeRobot datasets record). Normalised by the robot's
               joint limits and gripper range — the scale a `joint_pos` stage 1 of the same
               robot used, so its expert can be frozen under this policy.
  'ee_pose'    7-D absolute end-effector targets [pos, axis-angle, gripper] (as `robosuite`).
Observations: low-dim keys by data limits (quaternions and rot6d raw), images as uint8.

Evaluation is offline (no simulator): the last `eval.holdout_fraction` of the episodes are
held out of training; `eval.num_windows` of their windows (evenly spaced, fixed) are sampled
by the trained policy and scored against the recorded actions, over the executed steps
[To-1, To-1+Ta) and over the whole predicted horizon (open loop), next to the trivial
predictor of the training actions' mean chunk. Units: radians (or the gripper's own units) for
`joint_pos`, mm / degrees for `ee_pose`; `normalized_mse` is in the policy's [-1, 1] space.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from decoupled_jax.benchmarks.base import (Stage2Benchmark, TaskData, check_stage1_checkpoint,
                                           pose_errors)
from decoupled_jax.benchmarks.fk import stage1_normalizer
from decoupled_jax.benchmarks.robosuite import policy_normalizer as ee_normalizer
from decoupled_jax.data.episodes import EpisodeData
from decoupled_jax.data.normalizer import LimitsNormalizer
from decoupled_jax.data.robomimic_hdf5 import DatasetError
from decoupled_jax.data.sources import load_episodes
from decoupled_jax.data.windows import WindowSampler, prepare_policy_dataset
from decoupled_jax.errors import CheckpointError
from decoupled_jax.kinematics import robot as robot_lib

RAW_KEYS = ("robot0_eef_quat",)      # quaternions stay raw (docs/method.md §6)


def split_episodes(episodes: EpisodeData, fraction: float):
  """(train, held-out): the last round(n * fraction) episodes (at least one when fraction > 0
  and there are two or more) are held out; None when nothing is."""
  n = episodes.num_episodes
  k = min(n - 1, max(1, int(round(n * fraction)))) if fraction > 0 and n > 1 else 0
  if not k:
    return episodes, None
  return episodes.select_episodes(np.arange(n - k)), episodes.select_episodes(np.arange(n - k, n))


class PlainDataset(Stage2Benchmark):
  name = "dataset"

  def load(self, config) -> TaskData:
    d = config.data
    image_keys, lowdim_keys = tuple(d.image_keys), tuple(d.lowdim_keys)
    obs_keys = image_keys + lowdim_keys
    info = robot_lib.load_robot(config.robot).info
    joint = info.action_space == "joint_pos"
    raw = load_episodes(d.dataset, obs_keys, format=d.format, key_map=d.key_map.to_dict(),
                        filter_key=d.filter_key or None, lazy_images=bool(d.lazy_images),
                        joint_actions=info.joint_dim if joint else None)
    episodes = prepare_policy_dataset(raw, obs_keys, convert_actions=not joint)
    train, held = split_episodes(episodes, float(config.eval.get("holdout_fraction", 0.0)))
    if joint:
      # The scale of a joint_pos stage 1 of this robot (benchmarks/fk.py), so that its
      # frozen expert sees the same action scale.
      acts = stage1_normalizer("none", info.joint_lower, info.joint_upper,
                               config.data.position_box, robot=info).stats["actions"]
      fields = {k: None for k in lowdim_keys if k not in RAW_KEYS}
      norm = LimitsNormalizer.fit(train, fields, overrides={"actions": acts})
      a = train.fields["actions"]
      g_lo, g_hi = sorted(info.gripper_range)
      lo = np.concatenate([info.joint_lower, [g_lo] * info.num_grippers])
      hi = np.concatenate([info.joint_upper, [g_hi] * info.num_grippers])
      out = float(np.mean((a < lo - 1e-6) | (a > hi + 1e-6)))
      if out > 0:
        logging.warning("%s: %.1f %% of the action values lie outside the robot's joint limits "
                        "/ gripper range (config.robot); they normalise outside [-1, 1]",
                        d.dataset, 100 * out)
    else:
      norm = ee_normalizer(train, lowdim_keys, d.position_box)
    task = d.task or os.path.basename(os.path.normpath(d.dataset))
    logging.info("%s: %d training episodes, %d held out; %s actions (%d-D) of %s", d.dataset,
                 train.num_episodes, held.num_episodes if held is not None else 0,
                 info.action_space, train.fields["actions"].shape[-1], info.name)
    return TaskData(train, norm, task=task, action_space=info.action_space, held_out=held,
                    extra_meta={"robot": info.describe()})

  def check_stage1(self, config, data: TaskData) -> dict:
    meta = check_stage1_checkpoint(config, data, benchmarks=("fk",), same_action_scale=("fk",))
    ours, theirs = data.extra_meta["robot"], meta.get("robot") or {}
    if data.action_space == "joint_pos" and list(theirs.get("joints", [])) != list(ours["joints"]):
      raise CheckpointError(
          f"config.stage1_checkpoint={config.stage1_checkpoint} was pretrained on joints "
          f"{theirs.get('joints')} of {theirs.get('name')}; this run's robot ({ours['name']}) "
          f"has {ours['joints']}")
    return meta

  def evaluators(self, config, data: TaskData, runner):
    if data.held_out is None or int(config.eval.num_windows) <= 0:
      return None, lambda params, workdir, step: {}
    d = config.data
    obs_keys = tuple(d.image_keys) + tuple(d.lowdim_keys)
    held = data.held_out
    sampler = WindowSampler(held, n_obs_steps=d.n_obs_steps, horizon=d.horizon,
                            n_action_steps=d.n_action_steps, obs_keys=obs_keys)
    if len(sampler) == 0:
      raise DatasetError(f"{d.dataset}: the held-out episodes hold no full window; raise "
                         f"config.eval.holdout_fraction")
    n = min(int(config.eval.num_windows), len(sampler))
    batch = sampler.get_batch(np.linspace(0, len(sampler) - 1, n).round().astype(np.int64))
    true = batch["actions"].astype(np.float64)
    mean_chunk = _mean_chunk(data.episodes, d)
    nj = len(data.extra_meta["robot"]["joints"])   # the robot `load` read
    a, b = int(d.n_obs_steps) - 1, int(d.n_obs_steps) - 1 + int(d.n_action_steps)

    def score(pred):
      out = {}
      for name, sl in (("", slice(a, b)), ("open_loop_", slice(None))):
        p, t = pred[:, sl], true[:, sl]
        if data.action_space == "joint_pos":
          out[f"{name}joint_abs_err"] = float(np.abs(p[..., :nj] - t[..., :nj]).mean())
          if p.shape[-1] > nj:
            out[f"{name}gripper_abs_err"] = float(np.abs(p[..., nj:] - t[..., nj:]).mean())
        else:
          out.update({f"{name}{k}": v for k, v in pose_errors(p, t).items()})
        pn, tn = (np.asarray(data.norm.normalize_field("actions", x.astype(np.float32)))
                  for x in (p, t))
        out[f"{name}normalized_mse"] = float(np.mean((pn - tn) ** 2))
      return out

    baseline = score(np.broadcast_to(mean_chunk, true.shape))

    def evaluate(params, step):
      pred = runner(params).predict(batch["obs"], seeds=np.arange(n), steps=np.zeros(n))
      out = score(np.asarray(pred, np.float64))
      out.update({f"baseline_{k}": v for k, v in baseline.items()}, windows=n)
      logging.info("offline eval @%d on %d held-out windows: normalised MSE %.4f (mean-chunk "
                   "baseline %.4f)", step, n, out["normalized_mse"], baseline["normalized_mse"])
      return out

    return evaluate, lambda params, workdir, step: evaluate(params, step)


def _mean_chunk(episodes: EpisodeData, d) -> np.ndarray:
  """The training actions' mean chunk (H, D): the trivial open-loop predictor."""
  s = WindowSampler(episodes, n_obs_steps=d.n_obs_steps, horizon=d.horizon,
                    n_action_steps=d.n_action_steps, obs_keys=())
  idx = np.linspace(0, len(s) - 1, min(len(s), 4096)).round().astype(np.int64)
  return s.get_batch(idx)["actions"].astype(np.float64).mean(axis=0)
