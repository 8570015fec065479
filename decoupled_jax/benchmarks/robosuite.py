"""Benchmark `robosuite` (stage 2; docs/method.md §2, §4, §7): a robosuite task's
demonstrations (`config.data.dataset` in `config.data.format`: robomimic HDF5 — our generated
demonstrations or a converted real file —, RLDS or LeRobot), evaluated closed loop in
robosuite with the MimicGen protocol (§7.1).

Actions are converted to [pos, rot6d, gripper] and normalised with the fixed workspace box
shared with stage 1 (§6); `robot0_eef_pos` uses the same box; gripper_qpos, joints and the
low-dim `object` state use data limits; quaternions and rot6d stay raw.
"""
from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from decoupled_jax.benchmarks.base import Stage2Benchmark, TaskData, check_stage1_checkpoint
from decoupled_jax.data.normalizer import FieldStats, LimitsNormalizer
from decoupled_jax.data.robomimic_hdf5 import DatasetError
from decoupled_jax.data.sources import load_episodes
from decoupled_jax.data.windows import prepare_policy_dataset
from decoupled_jax.errors import ConfigError
from decoupled_jax.training import sharding

DATA_LIMIT_KEYS = ("robot0_gripper_qpos", "object", "robot0_joint_pos")


def policy_normalizer(episodes, lowdim_keys, box) -> LimitsNormalizer:
  """§6 for the fields present: the fixed workspace box for action and eef positions, data
  limits for gripper_qpos/object/joints, raw quaternions and rot6d."""
  lo, hi = (np.asarray(b, np.float32) for b in box)
  overrides = {"actions": FieldStats.create(lo, hi, dims=slice(0, 3))}
  if "robot0_eef_pos" in lowdim_keys:
    overrides["robot0_eef_pos"] = FieldStats.create(lo, hi)
  fields = {k: None for k in lowdim_keys if k in DATA_LIMIT_KEYS}
  return LimitsNormalizer.fit(episodes, fields, overrides=overrides)


def load_task_episodes(config):
  """(episodes with 7-D env actions, task) with the file's problems reported in one line."""
  from decoupled_jax.sim.robosuite_env import canonical_task
  d = config.data
  obs_keys = tuple(d.image_keys) + tuple(d.lowdim_keys)
  raw = load_episodes(d.dataset, obs_keys, format=d.format, key_map=d.key_map.to_dict(),
                      filter_key=d.filter_key or None, lazy_images=bool(d.lazy_images))
  names = raw.attrs.get("demo_names") or ["episode 0"]
  act = raw.fields["actions"]
  if act.ndim != 2 or act.shape[-1] != 7:
    raise DatasetError(f"{d.dataset}: 'actions' of {names[0]} have shape {act.shape[1:]} per "
                       f"frame; stage 2 needs 7-D absolute env actions [pos, axis-angle, "
                       f"gripper]")
  task = d.task or raw.attrs.get("env_args", {}).get("env_name", "")
  if not task:
    raise ConfigError(f"config.data.task is empty and {d.dataset} names no env in env_args")
  try:
    task = canonical_task(task)
  except KeyError as e:
    raise ConfigError(f"config.data.task: {e.args[0]}") from None
  return raw, task


class RobosuiteTask(Stage2Benchmark):
  name = "robosuite"

  def load(self, config) -> TaskData:
    d = config.data
    lowdim_keys = tuple(d.lowdim_keys)
    raw, task = load_task_episodes(config)
    episodes = prepare_policy_dataset(raw, tuple(d.image_keys) + lowdim_keys)
    norm = policy_normalizer(episodes, lowdim_keys, d.position_box)
    avg_len = float(np.mean(np.diff(np.concatenate([[0], episodes.episode_ends]))))
    max_steps = int(config.eval.max_steps) or int(math.ceil(2.5 * avg_len))
    return TaskData(episodes, norm, task=task, extra_meta={"max_steps": max_steps})

  def check_stage1(self, config, data: TaskData) -> dict:
    return check_stage1_checkpoint(config, data, benchmarks=("fk",), same_action_scale=("fk",))

  def evaluators(self, config, data: TaskData, runner):
    d, task = config.data, data.task
    use_images = bool(tuple(d.image_keys))
    max_steps = data.extra_meta["max_steps"]

    def evaluate(params, step):
      r = closed_loop(runner(params), task, config.eval, max_steps=max_steps,
                      use_images=use_images, num_episodes=int(config.eval.periodic_episodes))
      return {"success_rate": r["success_rate"], "mean_episode_length": r["mean_episode_length"]}

    def final_evaluate(params, workdir, step):
      out = {}
      if int(config.eval.num_episodes) > 0:
        t0 = time.time()
        ev = closed_loop(runner(params), task, config.eval, max_steps=max_steps,
                         use_images=use_images, video_dir=os.path.join(workdir, "videos"),
                         json_path=os.path.join(workdir, "eval.json"))
        out = dict({k: v for k, v in ev.items() if k != "episodes"}, wall_time_s=time.time() - t0)
      n_train = int(config.eval.train_episodes)
      if n_train > 0 and d.format == "robomimic":
        from decoupled_jax.sim.evaluator import demo_initial_states
        t0 = time.time()
        ev = closed_loop(runner(params), task, config.eval, max_steps=max_steps,
                         use_images=use_images,
                         json_path=os.path.join(workdir, "eval_train.json"),
                         initial_states=demo_initial_states(d.dataset, n_train,
                                                            filter_key=d.filter_key or None))
        out["train"] = dict({k: v for k, v in ev.items() if k != "episodes"},
                            wall_time_s=time.time() - t0)
      return out

    return evaluate, final_evaluate

  # ---------------------------------------------------------------- chain hooks (pipelines/paper.py)
  def chain_demos_folder(self, chain) -> str:
    return "demos_images" if chain.demos.images else "demos"

  def chain_demos(self, chain, demos_dir: str, tasks) -> dict:
    """{task: demos info with 'output' = its HDF5} for the chain's tasks."""
    return {t: demos_for_task(chain, demos_dir, t) for t in tasks}

  def chain_stage2(self, c, chain, task: str, dataset: str) -> None:
    c.data.dataset, c.data.task = dataset, task

  def chain_notes(self, results: dict) -> str:
    return ""


def demos_for_task(config, out_dir: str, task: str) -> dict:
  """`config.demos.dataset_dir/<Task>.hdf5` if set, else generated (once) into `out_dir`."""
  d = config.demos
  if d.dataset_dir:
    path = os.path.join(d.dataset_dir, f"{task}.hdf5")
    if not os.path.exists(path):
      raise FileNotFoundError(f"config.demos.dataset_dir={d.dataset_dir} has no {task}.hdf5")
    return {"task": task, "output": path, "reused": True}
  path = os.path.join(out_dir, f"{task}.hdf5")
  if os.path.exists(path) and os.path.exists(path + ".json"):
    info = json.load(open(path + ".json"))
    if info.get("written", 0) >= d.num_demos:
      return dict(info, reused=True)
  info = None
  if sharding.is_primary():   # one process generates; the others wait for the file
    from decoupled_jax.sim.demos import generate_task
    info = generate_task(task, out_dir, num_demos=int(d.num_demos),
                         num_workers=int(d.num_workers), images=bool(d.images),
                         seed=int(d.seed), progress=bool(config.progress))
  _barrier(f"demos_{task}")
  return info if info is not None else dict(json.load(open(path + ".json")), reused=True)


def _barrier(name: str) -> None:
  import jax
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def closed_loop(policy_fn, task: str, eval_config, *, max_steps: int, use_images: bool,
                video_dir=None, json_path=None, num_episodes=None, initial_states=None) -> dict:
  """The MimicGen protocol (§7.1): 'test' episodes on seeds 100000 + seed_offset + i, or
  'train' episodes from demonstrations' initial states."""
  from decoupled_jax.sim.evaluator import DEFAULT_SEED_BASE, evaluate_policy
  n = int(num_episodes or eval_config.num_episodes)
  first = DEFAULT_SEED_BASE + int(eval_config.seed_offset)
  seeds = None if initial_states is not None else list(range(first, first + n))
  return evaluate_policy(policy_fn, task, seeds=seeds, initial_states=initial_states,
                         n_obs_steps=policy_fn.n_obs, n_action_steps=policy_fn.n_act,
                         max_steps=max_steps, num_workers=int(eval_config.num_workers),
                         use_images=use_images, video_dir=video_dir,
                         num_videos=int(eval_config.num_videos), json_path=json_path,
                         progress=bool(eval_config.progress))
