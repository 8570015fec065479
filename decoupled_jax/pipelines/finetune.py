"""Stage 2 (decoupled), normal and random-frozen training on demonstrations, with closed-loop
evaluation (spec §2, §4, §5, §7).

`config.mode`:
  'normal'         every parameter trains from its init (spec §2.2);
  'decoupled'      the backbone is loaded from `config.stage1_checkpoint` by path and frozen;
                   the observation encoder and the conditioning layers train (spec §2.1);
  'random_frozen'  the backbone is frozen at its random init (the control of spec §1.3).

Data: a robomimic/MimicGen-layout HDF5 (our generated demonstrations or a real file).
Actions are converted to [pos, rot6d, gripper] and normalised with the fixed workspace box
shared with stage 1 (spec §6); `robot0_eef_pos` uses the same box; gripper_qpos and the
low-dim `object` state use data limits; quaternions and rot6d stay raw.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Optional

import jax
import ml_collections
import numpy as np

from decoupled_jax.data import rotation
from decoupled_jax.data.normalizer import (ABCDEFGH_POS_MAX, ABCDEFGH_POS_MIN, FieldStats,
                                           LimitsNormalizer)
from decoupled_jax.data.robomimic_hdf5 import load_robomimic_hdf5
from decoupled_jax.data.windows import WindowSampler, prepare_policy_dataset
from decoupled_jax.pipelines import common
from decoupled_jax.training import checkpoint as ckpt_lib
from decoupled_jax.training import trainer
from decoupled_jax.training.policy import make_sample_fn

MODES = ("normal", "decoupled", "random_frozen")
DATA_LIMIT_KEYS = ("robot0_gripper_qpos", "object", "robot0_joint_pos")


def position_box(config) -> tuple[np.ndarray, np.ndarray]:
  """The fixed position-normalisation box (world frame) shared by stage 1 and stage 2;
  default: the reference's MimicGen stats (spec §1.1, §6)."""
  box = config.data.get("position_box", None)
  if not box:
    return np.asarray(ABCDEFGH_POS_MIN, np.float32), np.asarray(ABCDEFGH_POS_MAX, np.float32)
  lo, hi = (np.asarray(b, np.float32) for b in box)
  if lo.shape != (3,) or hi.shape != (3,) or np.any(hi <= lo):
    raise ValueError(f"config.data.position_box must be ((xmin, ymin, zmin), (xmax, ymax, zmax)) "
                     f"with max > min, got {box}")
  return lo, hi


def policy_normalizer(episodes, lowdim_keys, box=None) -> LimitsNormalizer:
  """Spec §6 for the fields present: fixed workspace box for positions, data limits for
  gripper_qpos/object/joints, raw quaternions and rot6d."""
  lo, hi = box if box is not None else (ABCDEFGH_POS_MIN, ABCDEFGH_POS_MAX)
  overrides = {"actions": FieldStats.create(lo, hi, dims=slice(0, 3))}
  box = FieldStats.create(lo, hi)
  if "robot0_eef_pos" in lowdim_keys:
    overrides["robot0_eef_pos"] = box
  fields = {k: None for k in lowdim_keys if k in DATA_LIMIT_KEYS}
  return LimitsNormalizer.fit(episodes, fields, overrides=overrides)


def check_stage1_action_scale(stage1_checkpoint: str, norm: LimitsNormalizer) -> None:
  """A frozen backbone only works on the action scale it was pretrained on: the stage-1 run's
  action normaliser must equal this run's (same position box)."""
  meta = ckpt_lib.load_meta(stage1_checkpoint)
  theirs = LimitsNormalizer.from_dict(meta["normalizer"]).to_dict()["fields"].get("actions")
  ours = norm.to_dict()["fields"]["actions"]
  if theirs is None or json.dumps(theirs, sort_keys=True) != json.dumps(ours, sort_keys=True):
    raise ValueError(
        f"the stage-1 checkpoint {stage1_checkpoint} normalised actions with {theirs}, this run "
        f"with {ours}; set config.data.position_box to the stage-1 run's box")


def freeze_for_mode(config) -> ml_collections.ConfigDict:
  mode = config.mode
  if mode not in MODES:
    raise ValueError(f"config.mode must be one of {MODES}, got {mode!r}")
  f = ml_collections.ConfigDict(config.freeze.to_dict())
  if mode == "normal":
    f.mode, f.init_from = "none", ""
  elif mode == "decoupled":
    if not config.stage1_checkpoint:
      raise ValueError("config.mode='decoupled' needs config.stage1_checkpoint (the checkpoints "
                       "directory of an experiments/pretrain.py run)")
    if not os.path.isdir(config.stage1_checkpoint):
      raise FileNotFoundError(f"config.stage1_checkpoint={config.stage1_checkpoint} does not exist")
    f.mode, f.init_from = "backbone", config.stage1_checkpoint
  else:
    f.mode, f.init_from = "backbone", ""
  return f


class PolicyRunner:
  """Host-side policy for the evaluator: normalise obs, sample a chunk on device, return the
  executed env actions [To-1, To-1+Ta) as 7-D [pos, axis-angle, gripper].

  The batch is padded to a fixed size so one compiled program serves every call.
  """

  def __init__(self, policy, head, params, normalizer: LimitsNormalizer, *, obs_keys,
               horizon: int, n_obs_steps: int, n_action_steps: int, batch_size: int, seed: int = 0):
    self.params, self.normalizer, self.obs_keys = params, normalizer, tuple(obs_keys)
    self.n_obs, self.n_act, self.batch = n_obs_steps, n_action_steps, int(batch_size)
    self.sample = jax.jit(make_sample_fn(policy, head, (horizon, common.ACTION_DIM)))
    self.rng = jax.random.PRNGKey(seed)
    self.calls = 0

  def __call__(self, obs_batch):
    n = next(iter(obs_batch.values())).shape[0]
    if n > self.batch:
      raise ValueError(f"policy got {n} observations, more than its batch size {self.batch}")
    obs = {k: np.asarray(obs_batch[k]) for k in self.obs_keys}
    lowdim = [k for k in self.normalizer.fields if k in obs]
    obs.update(self.normalizer.normalize({k: obs[k].astype(np.float32) for k in lowdim},
                                         fields=lowdim))
    obs = {k: np.concatenate([v, np.repeat(v[-1:], self.batch - n, 0)]) if n < self.batch else v
           for k, v in obs.items()}
    self.calls += 1
    pred = self.sample(self.params, obs, jax.random.fold_in(self.rng, self.calls))
    pred = np.asarray(self.normalizer.unnormalize_field("actions", np.asarray(pred)))[:n]
    chunk = pred[:, self.n_obs - 1:self.n_obs - 1 + self.n_act]
    return rotation.model_action_to_env(chunk.astype(np.float64))


def runner_from_checkpoint(checkpoint_dir: str, *, batch_size: int, seed: int = 0,
                           step: Optional[int] = None, head_overrides: Optional[dict] = None):
  """Rebuilds the policy of a stage-2 run from its checkpoint (params + meta)."""
  params, meta = ckpt_lib.load_inference_params(checkpoint_dir, step)
  if meta.get("stage") != "finetune":
    raise ValueError(f"{checkpoint_dir} is a {meta.get('stage')!r} checkpoint; evaluation needs "
                     f"a stage-2 (experiments/train.py) checkpoint")
  config = ml_collections.ConfigDict(meta["config"])
  if head_overrides:
    config.head.update(head_overrides)
  policy, _ = common.make_policy(config, meta["image_keys"], meta["lowdim_keys"])
  norm = LimitsNormalizer.from_dict(meta["normalizer"])
  runner = PolicyRunner(policy, common.head_from_config(config), params, norm,
                        obs_keys=meta["image_keys"] + meta["lowdim_keys"],
                        horizon=meta["horizon"], n_obs_steps=meta["n_obs_steps"],
                        n_action_steps=meta["n_action_steps"], batch_size=batch_size, seed=seed)
  return runner, meta


def evaluate(runner: PolicyRunner, task: str, eval_config, *, max_steps: int, use_images: bool,
             video_dir: Optional[str] = None, json_path: Optional[str] = None,
             num_episodes: Optional[int] = None) -> dict:
  from decoupled_jax.sim.evaluator import DEFAULT_SEED_BASE, evaluate_policy
  n = int(num_episodes or eval_config.num_episodes)
  seeds = list(range(DEFAULT_SEED_BASE + eval_config.get("seed_offset", 0),
                     DEFAULT_SEED_BASE + eval_config.get("seed_offset", 0) + n))
  return evaluate_policy(runner, task, seeds=seeds, n_obs_steps=runner.n_obs,
                         n_action_steps=runner.n_act, max_steps=max_steps,
                         num_workers=int(eval_config.num_workers), use_images=use_images,
                         video_dir=video_dir, num_videos=int(eval_config.num_videos),
                         json_path=json_path, progress=bool(eval_config.get("progress", True)))


def train_and_evaluate(config, workdir: str, *, resume: bool = False) -> dict:
  common.log_devices()
  os.makedirs(workdir, exist_ok=True)
  d = config.data
  image_keys, lowdim_keys = tuple(d.image_keys), tuple(d.lowdim_keys)
  obs_keys = image_keys + lowdim_keys
  raw = load_robomimic_hdf5(d.dataset, obs_keys, filter_key=d.get("filter_key") or None)
  task = d.task or raw.attrs.get("env_args", {}).get("env_name", "")
  if not task:
    raise ValueError(f"config.data.task is empty and {d.dataset} names no env in env_args")
  episodes = prepare_policy_dataset(raw, obs_keys)
  norm = policy_normalizer(episodes, lowdim_keys, position_box(config))
  train_config = ml_collections.ConfigDict(config.to_dict())
  train_config.freeze = freeze_for_mode(config)
  if config.mode == "decoupled":
    check_stage1_action_scale(config.stage1_checkpoint, norm)
  episodes = prepare_policy_dataset(episodes, obs_keys, convert_actions=False, normalizer=norm)
  sampler = WindowSampler(episodes, n_obs_steps=d.n_obs_steps, horizon=d.horizon,
                          n_action_steps=d.n_action_steps, obs_keys=obs_keys)
  avg_len = float(np.mean(np.diff(np.concatenate([[0], episodes.episode_ends]))))
  max_steps = int(config.eval.max_steps) or int(math.ceil(2.5 * avg_len))
  batch = int(config.train.batch_size)
  logging.info("%s: %d demos, %d frames, %d windows; eval max_steps %d", d.dataset,
               episodes.num_episodes, episodes.num_frames, len(sampler), max_steps)

  def host_batches(start):
    step = start
    while True:   # a batch is a function of (seed, step): resumed runs see the same data
      yield sampler.sample(np.random.default_rng((config.seed, step)), batch)
      step += 1

  policy, backbone = common.make_policy(config, image_keys, lowdim_keys)
  head = common.head_from_config(config)
  example = sampler.sample(np.random.default_rng(0), 1)["obs"]
  meta = {"stage": "finetune", "mode": config.mode, "task": task,
          "config": common.config_to_dict(config), "normalizer": norm.to_dict(),
          "backbone": config.backbone.name, "image_keys": list(image_keys),
          "lowdim_keys": list(lowdim_keys), "horizon": int(d.horizon),
          "n_obs_steps": int(d.n_obs_steps), "n_action_steps": int(d.n_action_steps),
          "max_steps": max_steps, "dataset": os.path.abspath(d.dataset)}

  eval_fn = None
  if config.train.get("eval_every", 0):
    def eval_fn(state, step):
      runner = PolicyRunner(policy, head, state.inference_params(config.ema.enabled), norm,
                            obs_keys=obs_keys, horizon=d.horizon, n_obs_steps=d.n_obs_steps,
                            n_action_steps=d.n_action_steps,
                            batch_size=max(1, int(config.eval.num_workers)), seed=step)
      r = evaluate(runner, task, config.eval, max_steps=max_steps, use_images=bool(image_keys),
                   num_episodes=int(config.eval.get("periodic_episodes", 10)))
      return {"success_rate": r["success_rate"], "mean_episode_length": r["mean_episode_length"]}

  result = trainer.train(
      train_config, workdir, policy=policy, head=head, example_obs=example,
      action_shape=(int(d.horizon), common.ACTION_DIM),
      conditioning_patterns=common.conditioning_patterns(backbone),
      backbone_no_decay=common.backbone_no_decay(backbone), meta=meta,
      host_batches=host_batches, eval_fn=eval_fn, resume=resume,
      progress=config.get("progress", True))
  summary = {"mode": config.mode, "task": task, "backbone": config.backbone.name,
             "steps": result.steps, "train_wall_time_s": result.wall_time_s,
             "steps_per_s": result.steps_per_s, "compile_time_s": result.compile_time_s,
             "num_params": result.num_params, "num_trainable": result.num_trainable,
             "last_loss": result.last_loss,
             "checkpoint_dir": os.path.join(workdir, "checkpoints"), "max_steps": max_steps}
  if int(config.eval.num_episodes) > 0:
    runner = PolicyRunner(policy, head, result.state.inference_params(config.ema.enabled), norm,
                          obs_keys=obs_keys, horizon=d.horizon, n_obs_steps=d.n_obs_steps,
                          n_action_steps=d.n_action_steps,
                          batch_size=max(1, int(config.eval.num_workers)), seed=config.seed)
    t0 = time.time()
    ev = evaluate(runner, task, config.eval, max_steps=max_steps, use_images=bool(image_keys),
                  video_dir=os.path.join(workdir, "videos"),
                  json_path=os.path.join(workdir, "eval.json"))
    summary["eval"] = {k: v for k, v in ev.items() if k != "episodes"}
    summary["eval_wall_time_s"] = time.time() - t0
  common.write_json(os.path.join(workdir, "summary.json"), summary)
  return summary
