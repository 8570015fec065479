"""A LIBERO task as our policies see it (simulator side: numpy + libero, no jax).

`LiberoTask(suite, task_id, cameras=...)` builds the task's env (`ControlEnv`, the base of
LIBERO's `OffScreenRenderEnv`; the offscreen renderer only when cameras are asked for, which
is ≈ 5× faster without them) and turns raw robosuite observations into the policy's:

  robot0_eef_pos        (3)   end-effector position (world frame)
  robot0_eef_axis_angle (3)   end-effector orientation, axis-angle of robosuite's xyzw quat
  robot0_gripper_qpos   (2)   finger joint positions
      -> together LIBERO's 8-D "observation.state" as the paper's env wrapper builds it
  object_poses          (14)  privileged: pos(3) + xyzw quat(4) of the task's two objects of
                              interest (LIBERO's `obj_of_interest`; zeros where a task has one)
  agentview_image, robot0_eye_in_hand_image  (H, W, 3) uint8, rotated 180° (as the paper's
                              runner and LIBERO's datasets store them), when cameras are on

Actions are LIBERO's native delta OSC_POSE actions [dpos(3), d-axis-angle(3), gripper ±1]
in [-1, 1] (the controller scales them to ≤ 5 cm / 0.5 rad per step).
"""
from __future__ import annotations

import contextlib
import math
import os
from typing import Sequence

import numpy as np

from decoupled_jax.libero import suites

CAMERAS = ("agentview", "robot0_eye_in_hand")
NUM_OBJECTS = 2


def quat2axisangle(quat) -> np.ndarray:
  """xyzw quaternion -> axis-angle (robosuite's / openpi's LIBERO example convention)."""
  q = np.asarray(quat, np.float64).copy()
  q[3] = min(max(q[3], -1.0), 1.0)
  den = math.sqrt(max(1.0 - q[3] * q[3], 0.0))
  if math.isclose(den, 0.0):
    return np.zeros(3)
  return q[:3] * 2.0 * math.acos(q[3]) / den


def task_info(suite: str, task_id: int):
  """(libero Task, bddl path, init states (50, state_dim)) of one task."""
  from libero.libero import benchmark, get_libero_path
  suites.check_tasks(suite, [task_id])
  with _quiet():
    s = benchmark.get_benchmark_dict()[suite]()
  task = s.get_task(task_id)
  bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
  return task, bddl, np.asarray(s.get_task_init_states(task_id))


def instructions(suite: str) -> list[str]:
  """The suite's 10 language instructions, in task-id order."""
  from libero.libero import benchmark
  with _quiet():
    s = benchmark.get_benchmark_dict()[suites.check_suite(suite)]()
  return [s.get_task(i).language for i in range(s.n_tasks)]


@contextlib.contextmanager
def _quiet():
  import io
  import sys
  old = sys.stdout
  sys.stdout = io.StringIO()   # libero prints "[info] Applying task order ..." on every lookup
  try:
    yield
  finally:
    sys.stdout = old


class LiberoTask:
  """One LIBERO task's env with the policy's observation layout."""

  def __init__(self, suite: str, task_id: int, *, cameras: Sequence[str] = (),
               image_size: int = 128):
    from libero.libero.envs.env_wrapper import ControlEnv
    bad = [c for c in cameras if c not in CAMERAS]
    if bad:
      raise ValueError(f"unknown LIBERO camera(s) {bad}; expected some of {list(CAMERAS)}")
    self.suite, self.task_id = suites.check_suite(suite), int(task_id)
    self.task, self.bddl, self.init_states = task_info(suite, task_id)
    self.instruction = self.task.language
    self.max_steps = suites.MAX_STEPS[suite]
    self.cameras = tuple(cameras)
    kw = dict(bddl_file_name=self.bddl, has_renderer=False, use_camera_obs=bool(cameras),
              has_offscreen_renderer=bool(cameras), hard_reset=False,
              camera_heights=image_size, camera_widths=image_size)
    if cameras:
      kw["camera_names"] = list(cameras)
    self.env = ControlEnv(**kw)
    self.objects = list(self.env.obj_of_interest)[:NUM_OBJECTS]
    self._fixture_xml_poses = self._xml_fixture_poses()

  # -- episodes -------------------------------------------------------------------------------
  def reset_to(self, init_state) -> dict:
    """Reset to one of the bundled init states (evaluation); returns the raw observation."""
    self._reset_gripper_command()
    self.env.reset()
    return self.env.set_init_state(np.asarray(init_state))

  def _reset_gripper_command(self):
    """robosuite's Panda gripper integrates its command (`current_action`, +-0.01 per substep)
    and only a hard reset (a fresh model) zeroes it; without this an episode would start from
    the previous one's gripper command (fingers lagging open during the settling steps, states
    differing from a fresh process)."""
    for robot in self.env.env.robots:
      gripper = getattr(robot, "gripper", None)
      if gripper is not None and hasattr(gripper, "current_action"):
        gripper.current_action = np.zeros_like(np.asarray(gripper.current_action, float))

  def reset_random(self, seed: int) -> dict:
    """A fresh random placement drawn from LIBERO's own samplers, reproducible in `seed`
    (the samplers draw from numpy's global RNG, so it is seeded here).

    LIBERO's site samplers ("on the stove", "on the cabinet", "in the drawer") add the site's
    *world* position to the fixture's sampled position, which is only right on a freshly loaded
    model (fixtures at their XML pose, as after a hard reset). With hard_reset=False the
    fixtures keep the previous episode's pose and those objects land far off (a bowl floating
    beside the robot), so the fixtures are put back to their XML pose first."""
    self._reset_gripper_command()
    model = self.env.sim.model
    for bid, pos, quat in self._fixture_xml_poses:
      model.body_pos[bid] = pos
      model.body_quat[bid] = quat
    np.random.seed(int(seed) % 2**32)
    return self.env.reset()

  def _xml_fixture_poses(self):
    out = []
    env = self.env.env
    for obj in env.fixtures_dict.values():
      el = env.model.worldbody.find(f".//body[@name='{obj.root_body}']")
      if el is None:
        continue
      pos = np.array([float(v) for v in (el.get("pos") or "0 0 0").split()])
      quat = np.array([float(v) for v in (el.get("quat") or "1 0 0 0").split()])
      out.append((self.env.sim.model.body_name2id(obj.root_body), pos, quat))
    return out

  def wait(self, obs: dict, steps: int = suites.NUM_WAIT_STEPS) -> dict:
    """The protocol's settling steps (open gripper, no motion) before an episode."""
    for _ in range(steps):
      obs, _, _, _ = self.env.step(np.asarray(suites.WAIT_ACTION))
    return obs

  def step(self, action) -> tuple[dict, bool]:
    a = np.asarray(action, np.float64).reshape(-1)
    if a.shape != (7,) or not np.all(np.isfinite(a)):
      raise ValueError(f"LIBERO action must be 7 finite numbers, got {a.tolist()}")
    obs, _, done, _ = self.env.step(a)
    return obs, bool(done) or bool(self.env.check_success())

  def success(self) -> bool:
    return bool(self.env.check_success())

  def sim_state(self) -> np.ndarray:
    return np.asarray(self.env.get_sim_state(), np.float64)

  def close(self):
    with contextlib.suppress(Exception):
      self.env.close()

  # -- observations ---------------------------------------------------------------------------
  def object_pose(self, raw: dict, name: str) -> np.ndarray:
    return np.concatenate([raw[f"{name}_pos"], raw[f"{name}_quat"]]).astype(np.float32)

  def policy_obs(self, raw: dict) -> dict:
    out = {"robot0_eef_pos": np.asarray(raw["robot0_eef_pos"], np.float32),
           "robot0_eef_axis_angle": quat2axisangle(raw["robot0_eef_quat"]).astype(np.float32),
           "robot0_gripper_qpos": np.asarray(raw["robot0_gripper_qpos"], np.float32)}
    poses = np.zeros(7 * NUM_OBJECTS, np.float32)
    for i, name in enumerate(self.objects):
      poses[7 * i:7 * i + 7] = self.object_pose(raw, name)
    out["object_poses"] = poses
    for cam in self.cameras:
      out[f"{cam}_image"] = np.ascontiguousarray(raw[f"{cam}_image"][::-1, ::-1])
    return out

