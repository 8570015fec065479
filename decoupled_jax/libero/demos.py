"""Scripted LIBERO demonstrations in LIBERO's robomimic-style HDF5 layout.

Simulator side (the LIBERO venv: numpy, h5py, libero; never jax).
`generate_task(suite, task_id, out_dir, num_demos, seed)` rolls the scripted expert
(`experts.py`) out from random placements drawn by LIBERO's own samplers
(`LiberoTask.reset_random`), after the protocol's settling steps, and keeps the successful
episodes (each capped at the suite's max steps) in `<out_dir>/<suite>/<task name>_demo.hdf5`:

  data.attrs   problem_info (JSON: problem_name, domain_name, language_instruction),
               bddl_file_name, env_args (JSON), total (frames), suite, task_id,
               language_instruction, expert
  data/demo_<i>/actions (T, 7) float64    LIBERO's native delta OSC actions in [-1, 1]
               states (T, state_dim)      flattened MuJoCo state before each action
               rewards (T), dones (T)     sparse: 1 at the last (successful) step
               attrs: num_samples, seed (placement), expert_seed, attempt, init_state
               obs/ee_pos (3), ee_ori (3, axis-angle), ee_states (6), gripper_states (2),
                   joint_states (7), object_poses (14), and with cameras agentview_rgb /
                   eye_in_hand_rgb (T, H, W, 3) uint8, rotated 180° as `policy_obs` gives them
  obs[t] is what the action at t was chosen from.

Attempt k of task t uses placement / expert seeds drawn from SeedSequence((seed, suite, t, k)),
so a rerun with the same seed writes bitwise-identical demonstrations, and the file is
written to `<file>.tmp` and renamed at the end (a task whose file already holds >= num_demos
demos is skipped). Placements that LIBERO's samplers botch (objects interpenetrating and
flung off the table: the scene then is not what the task describes) are re-drawn; they are
recognised as an object's settled xy lying > 8 cm from its xy in all of LIBERO's 50 bundled
init states, and counted in the sidecar as `rejected_placements`.
A JSON sidecar `<file>.json` records instruction, demos written, attempts, successes, expert
success rate, mean length and seconds.
"""
from __future__ import annotations

import json
import os
import time
from typing import Sequence

import numpy as np

from decoupled_jax.libero import suites
from decoupled_jax.util import count_hdf5_demos, write_json

PLACEMENT_TOL = 0.08        # m: settled object xy vs. the nearest bundled init state's
CAMERA_KEYS = {"agentview": "agentview_rgb", "robot0_eye_in_hand": "eye_in_hand_rgb"}


def demo_path(out_dir: str, suite: str, task_name: str) -> str:
  return os.path.join(out_dir, suite, f"{task_name}_demo.hdf5")


def attempt_seeds(seed: int, suite: str, task_id: int, attempt: int) -> tuple[int, int]:
  """(placement seed, expert seed) of attempt `attempt` (deterministic)."""
  ss = np.random.SeedSequence([int(seed), suites.SUITES.index(suite), int(task_id), int(attempt)])
  a, b = ss.generate_state(2)
  return int(a), int(b)


class PlacementCheck:
  """Is a settled random placement one of the scenes the task describes? (see module doc)"""

  def __init__(self, task):
    env = task.env.env
    sim = env.sim
    self.refs = {}
    for name, obj in env.objects_dict.items():
      if not obj.joints:
        continue
      adr = sim.model.get_joint_qpos_addr(obj.joints[-1])
      adr = adr[0] if isinstance(adr, tuple) else adr
      self.refs[name] = np.asarray(task.init_states)[:, 1 + adr:1 + adr + 2]   # state = [t, qpos, ...]

  def __call__(self, raw: dict) -> tuple[bool, str]:
    for name, ref in self.refs.items():
      key = f"{name}_pos"
      if key not in raw:
        continue
      d = float(np.min(np.linalg.norm(ref - np.asarray(raw[key])[:2], axis=1)))
      if d > PLACEMENT_TOL:
        return False, f"{name} {d:.3f} m from every bundled init state"
    return True, ""


def run_episode(task, expert, raw: dict, record: bool = True):
  """Roll `expert` out from raw observation `raw` (after the settling steps) until success or
  the suite's max steps. Returns (success, steps, episode dict of lists or None)."""
  ep = {"actions": [], "states": [], "obs": {}} if record else None
  for t in range(task.max_steps):
    action = np.asarray(expert.act(raw), np.float64)
    if record:
      ep["states"].append(task.sim_state())
      ep["actions"].append(action)
      obs = task.policy_obs(raw)
      rec = {"ee_pos": obs["robot0_eef_pos"], "ee_ori": obs["robot0_eef_axis_angle"],
             "ee_states": np.concatenate([obs["robot0_eef_pos"], obs["robot0_eef_axis_angle"]]),
             "gripper_states": obs["robot0_gripper_qpos"],
             "joint_states": np.asarray(raw["robot0_joint_pos"], np.float64),
             "object_poses": obs["object_poses"]}
      for cam in task.cameras:
        rec[CAMERA_KEYS[cam]] = obs[f"{cam}_image"]
      for k, v in rec.items():
        ep["obs"].setdefault(k, []).append(v)
    raw, done = task.step(action)
    if done:
      return True, t + 1, ep
  return False, task.max_steps, ep


def _write_demo(group, ep: dict, attrs: dict):
  n = len(ep["actions"])
  group.create_dataset("actions", data=np.asarray(ep["actions"], np.float64))
  group.create_dataset("states", data=np.asarray(ep["states"], np.float64))
  rewards = np.zeros(n, np.float64)
  rewards[-1] = 1.0
  group.create_dataset("rewards", data=rewards)
  group.create_dataset("dones", data=rewards.astype(np.int64))
  obs = group.create_group("obs")
  for k, v in ep["obs"].items():
    arr = np.stack(v)
    if arr.dtype == np.uint8:
      obs.create_dataset(k, data=arr, chunks=(1,) + arr.shape[1:], compression="lzf")
    else:
      obs.create_dataset(k, data=arr)
  group.attrs["num_samples"] = n
  for k, v in attrs.items():
    group.attrs[k] = v


def _problem_info(task) -> dict:
  try:
    from libero.libero.envs.bddl_utils import get_problem_info
    info = dict(get_problem_info(task.bddl))
  except Exception:  # noqa: BLE001 - the attrs below are what readers need
    info = {}
  info["language_instruction"] = task.instruction
  info.setdefault("problem_name", task.task.name)
  return info


def generate_task(suite: str, task_id: int, out_dir: str, num_demos: int, seed: int = 0,
                  cameras: Sequence[str] = (), image_size: int = 128,
                  max_attempts_factor: float = 3, log=print) -> dict:
  """Write `num_demos` successful expert demonstrations of one task (see module doc).
  Returns the sidecar dict (+ `path`, `skipped`)."""
  import h5py

  from decoupled_jax.libero import experts
  from decoupled_jax.libero.env import LiberoTask, task_info

  suites.check_tasks(suite, [task_id])
  task_id, num_demos = int(task_id), int(num_demos)
  if num_demos < 1:
    raise ValueError(f"num_demos must be >= 1, got {num_demos}")
  bad = [c for c in cameras if c not in CAMERA_KEYS]
  if bad:
    raise ValueError(f"unknown LIBERO camera(s) {bad}; expected some of {list(CAMERA_KEYS)}")
  lib_task, _, _ = task_info(suite, task_id)
  path = demo_path(out_dir, suite, lib_task.name)
  sidecar = path + ".json"
  have = count_hdf5_demos(path)
  if have >= num_demos:
    info = json.load(open(sidecar)) if os.path.exists(sidecar) else {
        "suite": suite, "task_id": task_id, "num_demos": have}
    return {**info, "path": path, "skipped": True}

  t0 = time.time()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  task = LiberoTask(suite, task_id, cameras=tuple(cameras), image_size=int(image_size))
  check = PlacementCheck(task)
  max_attempts = max(1, int(np.ceil(max_attempts_factor * num_demos)))
  attempts = successes = rejected = 0
  lengths, failures, index = [], [], 0
  tmp = path + ".tmp"
  try:
    with h5py.File(tmp, "w") as f:
      data = f.create_group("data")
      while successes < num_demos and attempts < max_attempts and rejected <= 2 * max_attempts:
        p_seed, e_seed = attempt_seeds(seed, suite, task_id, index)
        index += 1
        raw = task.wait(task.reset_random(p_seed))
        ok, why = check(raw)
        if not ok:
          rejected += 1
          continue
        init_state = task.sim_state()
        expert = experts.make_expert(task, e_seed)
        attempts += 1
        success, steps, ep = run_episode(task, expert, raw)
        if not success:
          failures.append(p_seed)
          continue
        _write_demo(data.create_group(f"demo_{successes}"), ep,
                    {"seed": p_seed, "expert_seed": e_seed, "attempt": index - 1,
                     "init_state": init_state})
        successes += 1
        lengths.append(steps)
        log(f"{suite} task {task_id}: demo {successes}/{num_demos} ({steps} steps; "
            f"{attempts} attempts)")
      info = _problem_info(task)
      data.attrs["problem_info"] = json.dumps(info)
      data.attrs["bddl_file_name"] = task.bddl
      data.attrs["env_args"] = json.dumps({
          "env_name": info.get("problem_name", ""), "type": 1, "suite": suite,
          "task_id": task_id, "bddl_file_name": task.bddl,
          "env_kwargs": {"controller": "OSC_POSE", "control_freq": 20,
                         "camera_names": list(cameras), "camera_heights": int(image_size),
                         "camera_widths": int(image_size)}})
      data.attrs["total"] = int(sum(lengths))
      data.attrs["suite"] = suite
      data.attrs["task_id"] = task_id
      data.attrs["language_instruction"] = task.instruction
      data.attrs["expert"] = experts.EXPERT_NAME
      data.attrs["seed"] = int(seed)
    os.replace(tmp, path)
  finally:
    task.close()
    if os.path.exists(tmp):
      os.remove(tmp)
  info = {"suite": suite, "task_id": task_id, "task_name": lib_task.name,
          "instruction": task.instruction, "num_demos": successes, "requested": num_demos,
          "complete": successes >= num_demos, "attempts": attempts, "successes": successes,
          "success_rate": successes / attempts if attempts else 0.0,
          "rejected_placements": rejected, "failed_seeds": failures,
          "mean_length": float(np.mean(lengths)) if lengths else 0.0,
          "max_length": int(max(lengths)) if lengths else 0,
          "seconds": round(time.time() - t0, 1), "seed": int(seed),
          "cameras": list(cameras), "image_size": int(image_size),
          "expert": experts.EXPERT_NAME}
  write_json(sidecar, info, indent=1)
  if not info["complete"]:
    log(f"WARNING {suite} task {task_id}: only {successes}/{num_demos} demos after "
        f"{attempts} attempts")
  return {**info, "path": path, "skipped": False}
