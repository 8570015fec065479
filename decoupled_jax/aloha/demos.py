"""Scripted ALOHA demonstrations in a robomimic-style HDF5 layout (docs/aloha.md).

Simulator side (the ALOHA venv: numpy, h5py, gym-aloha; never jax).
`generate_task(task, out_dir, num_demos, seed)` runs ACT's two-stage recipe (`experts.py`):
the waypoint expert in the mocap task, its joint trajectory replayed in the joint task from
the same object pose; successful replays are kept, each the whole episode (ACT's
episode_len, 400 steps at 50 Hz), in `<out_dir>/<task>.hdf5`:

  data.attrs   task, fps (50), seed, expert, episode_len, total (frames), env_args (JSON),
               action_convention ('joint_pos': the library's loaders then need
               `joint_actions=14`), obs_keys
  data/demo_<i>/actions (T, 14) float32   the joint commands sent, gym-aloha's order
               [left 6 joints, left gripper (0 closed, 1 open), right 6, right gripper]
               states (T, 30 | 44) float64  MuJoCo state (qpos, qvel) before each action
               rewards (T) float32          the task's staged reward after each action (0..4)
               dones (T) int64              1 at the last step
               obs/qpos (T, 14), obs/qvel (T, 14), obs/env_state (T, 7 | 14) float32, and
                   with a camera obs/top (T, H, W, 3) uint8
               attrs: num_samples, seed (gym-aloha's pose sampler), attempt, object_pose,
                   success_step (first step at the task's max reward)
  obs[t] is what the action at t was chosen from.

Attempt k of task t uses the pose seed SeedSequence((seed, t, k)) (t: index in env.TASKS),
so a rerun with the same seed writes bitwise-identical data (h5py writes no timestamps
here: `track_times=False`). The file is written to `<file>.tmp` and renamed at the end; a
task whose file already holds >= num_demos demos is skipped. A JSON sidecar `<file>.json`
records demos written, attempts, successes, expert success rate, mean length, seconds.
"""
from __future__ import annotations

import json
import os
import time
from typing import Optional, Sequence

import numpy as np

from decoupled_jax.aloha import env as aloha_env
from decoupled_jax.util import count_hdf5_demos, write_json


def demo_path(out_dir: str, task: str) -> str:
  return os.path.join(out_dir, f"{task}.hdf5")


def attempt_seed(seed: int, task: str, attempt: int) -> int:
  """gym-aloha pose-sampler seed of attempt `attempt` (deterministic, < 2**32)."""
  ss = np.random.SeedSequence([int(seed), aloha_env.TASKS.index(task), int(attempt)])
  return int(ss.generate_state(1, np.uint32)[0])


def _create(group, name, arr, image=False):
  kw = dict(track_times=False)
  if image:
    kw.update(chunks=(1,) + arr.shape[1:], compression="gzip", compression_opts=4)
  group.create_dataset(name, data=arr, **kw)


def _write_demo(group, actions, ep: dict, attrs: dict):
  n = len(actions)
  _create(group, "actions", np.asarray(actions, np.float32))
  _create(group, "states", np.asarray(ep["states"], np.float64))
  _create(group, "rewards", np.asarray(ep["rewards"], np.float32))
  dones = np.zeros(n, np.int64)
  dones[-1] = 1
  _create(group, "dones", dones)
  obs = group.create_group("obs", track_order=True)
  for k in aloha_env.OBS_KEYS:
    if k not in ep["obs"]:
      continue
    arr = np.stack(ep["obs"][k])
    if arr.dtype == np.uint8:
      _create(obs, k, arr, image=True)
    else:
      _create(obs, k, arr.astype(np.float32))
  group.attrs["num_samples"] = n
  for k, v in attrs.items():
    group.attrs[k] = v


def env_args(task: str, camera_size: Optional[Sequence[int]]) -> dict:
  return {"env_name": f"gym_aloha/{task}", "type": "gym_aloha", "env_version": "gym-aloha 0.1.5",
          "env_kwargs": {"task": task, "control": "joint", "fps": aloha_env.FPS,
                         "camera_size": list(camera_size) if camera_size else None,
                         "action_space": "joint_pos"}}


def generate_task(task: str, out_dir: str, num_demos: int, seed: int = 0,
                  camera_size: Optional[Sequence[int]] = None, max_attempts_factor: float = 3,
                  log=print) -> dict:
  """Write `num_demos` successful demonstrations of `task` (see module doc). Returns the
  sidecar dict (+ `path`, `skipped`)."""
  import h5py

  from decoupled_jax.aloha import experts
  task = aloha_env.check_task(task)
  num_demos = int(num_demos)
  if num_demos < 1:
    raise ValueError(f"num_demos must be >= 1, got {num_demos}")
  path = demo_path(out_dir, task)
  sidecar = path + ".json"
  have = count_hdf5_demos(path)
  if have >= num_demos:
    info = json.load(open(sidecar)) if os.path.exists(sidecar) else {
        "task": task, "num_demos": have}
    return {**info, "path": path, "skipped": True}

  t0 = time.time()
  os.makedirs(out_dir or ".", exist_ok=True)
  ee = aloha_env.AlohaTask(task, "ee")
  joint = aloha_env.AlohaTask(task, "joint", camera_size=camera_size)
  max_attempts = max(1, int(np.ceil(max_attempts_factor * num_demos)))
  attempts = successes = ee_successes = 0
  lengths, first_steps, failures = [], [], []
  tmp = path + ".tmp"
  try:
    with h5py.File(tmp, "w", track_order=True) as f:
      data = f.create_group("data", track_order=True)
      while successes < num_demos and attempts < max_attempts:
        p_seed = attempt_seed(seed, task, attempts)
        attempts += 1
        pose = aloha_env.sample_object_pose(task, p_seed)
        traj = experts.joint_trajectory(ee, pose)
        ee_successes += int(traj["ee_success"])
        ok, first, ep = experts.replay(joint, pose, traj["actions"], record=True)
        if not ok:
          failures.append(p_seed)
          continue
        _write_demo(data.create_group(f"demo_{successes}", track_order=True), traj["actions"],
                    ep, {"seed": p_seed, "attempt": attempts - 1, "object_pose": pose,
                         "success_step": first})
        successes += 1
        lengths.append(len(traj["actions"]))
        first_steps.append(first)
        log(f"{task}: demo {successes}/{num_demos} (success at step {first}; "
            f"{attempts} attempts)")
      data.attrs["task"] = task
      data.attrs["fps"] = aloha_env.FPS
      data.attrs["seed"] = int(seed)
      data.attrs["expert"] = experts.EXPERT_NAME
      data.attrs["episode_len"] = aloha_env.EPISODE_LEN
      data.attrs["total"] = int(sum(lengths))
      data.attrs["env_args"] = json.dumps(env_args(task, camera_size))
      data.attrs["action_convention"] = "joint_pos"
      data.attrs["obs_keys"] = json.dumps([k for k in aloha_env.OBS_KEYS
                                           if k != aloha_env.CAMERA or camera_size])
    os.replace(tmp, path)
  finally:
    ee.close()
    joint.close()
    if os.path.exists(tmp):
      os.remove(tmp)
  info = {"task": task, "num_demos": successes, "requested": num_demos,
          "complete": successes >= num_demos, "attempts": attempts, "successes": successes,
          "success_rate": successes / attempts if attempts else 0.0,
          "ee_successes": ee_successes, "failed_seeds": failures,
          "mean_length": float(np.mean(lengths)) if lengths else 0.0,
          "mean_success_step": float(np.mean(first_steps)) if first_steps else 0.0,
          "seconds": round(time.time() - t0, 1),
          "seconds_per_attempt": round((time.time() - t0) / max(attempts, 1), 3),
          "seed": int(seed), "camera_size": list(camera_size) if camera_size else None,
          "expert": experts.EXPERT_NAME}
  write_json(sidecar, info, indent=1)
  if not info["complete"]:
    log(f"WARNING {task}: only {successes}/{num_demos} demos after {attempts} attempts")
  return {**info, "path": path, "skipped": False}
