"""Scripted experts with privileged object state for Lift, Stack, NutAssemblySquare, PickPlaceCan.

Each expert is a small phase machine over waypoints (approach above, descend, grasp, lift,
move, place, release, retreat). Waypoint targets are computed from the live object state when
a phase starts (objects settle after reset; held objects are tracked through their measured
grasp offset). A smoothing tracker turns waypoints into absolute end-effector targets:
the commanded position follows a velocity-limited, acceleration-limited profile and the
orientation slerps at a bounded angular speed, so the 20 Hz action stream is smooth.

Actions are 7-D `[pos, axis-angle, gripper]` in the world frame of the grip site (the frame
the absolute OSC controller consumes, see `sim/frames.py`); gripper -1 open, +1 close.

Usage:
    env = make_env('lift'); expert = make_expert('Lift')
    obs = env.reset(seed); expert.reset(env, obs, seed)
    while not done: obs, r, d, info = env.step(expert.act(env, obs))
or `run_expert_episode(env, expert, seed)` which also records observations, actions, states.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from scipy.spatial.transform import Rotation

from decoupled_jax.sim import frames

DT = 1.0 / 20.0
# Grip-site orientation pointing down with the fingers closing along world y (yaw 0 = the
# Panda's reset orientation); `down(yaw)` rotates it about world z.
_R_DOWN = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


def down(yaw: float) -> np.ndarray:
  return Rotation.from_euler("z", yaw).as_matrix() @ _R_DOWN


def quat_yaw(q_xyzw) -> float:
  return float(Rotation.from_quat(q_xyzw).as_euler("zyx")[0])


def wrap_to(angle: float, period: float) -> float:
  """Equivalent angle (mod `period`) closest to 0."""
  return float((angle + period / 2) % period - period / 2)


@dataclasses.dataclass
class Phase:
  name: str
  target: Callable[["ScriptedExpert", object], tuple[np.ndarray, np.ndarray]] | None
  gripper: float
  speed: float = 0.25          # m/s
  hold: int = 0                # extra steps after the target is reached (or pure wait when target is None)
  tol: float = 0.01            # m: actual eef distance to target to finish
  track: bool = False          # recompute the target every step
  timeout: int = 150


class ScriptedExpert:
  """Base class: tracker + phase sequencing. Subclasses define `phases()`."""
  task: str = ""
  max_steps: int = 400

  def __init__(self, *, accel: float = 1.5, ang_speed: float = 1.5, noise: float = 0.0,
               noise_seed: int = 0):
    self.accel = accel
    self.ang_speed = ang_speed
    self.noise = noise
    self.noise_seed = int(noise_seed)
    self.rng = np.random.default_rng(self.noise_seed)

  # -- state
  def reset(self, env, obs, seed: int | None = None):
    """Start an episode. The action-noise generator restarts from (noise_seed, seed), so an
    episode does not depend on the episodes this expert ran before."""
    self.rng = np.random.default_rng(
        self.noise_seed if seed is None else (self.noise_seed, int(seed)))
    self.cmd_pos = np.array(obs["robot0_eef_pos"], np.float64)
    self.cmd_rot = frames.hand_quat_to_site_matrix(obs["robot0_eef_quat"])
    self.cmd_vel = np.zeros(3)
    self.grip = -1.0
    self.mem: dict = {}
    self._phases = self.phases()
    self._i = 0
    self._start_phase(env, obs)

  @property
  def done(self) -> bool:
    return self._i >= len(self._phases)

  @property
  def phase_name(self) -> str:
    return self._phases[self._i].name if not self.done else "done"

  def _start_phase(self, env, obs):
    self._steps = 0
    self._held = 0
    if self.done:
      return
    ph = self._phases[self._i]
    self._goal = ph.target(self, env) if ph.target is not None else (self.cmd_pos.copy(), self.cmd_rot.copy())

  # -- tracker
  def _track(self, goal_pos, goal_rot, speed):
    err = goal_pos - self.cmd_pos
    dist = np.linalg.norm(err)
    # desired velocity: toward goal, capped by speed and by the stopping distance
    v_stop = np.sqrt(2 * self.accel * dist)
    v_des = err / max(dist, 1e-9) * min(speed, v_stop, dist / DT)
    dv = v_des - self.cmd_vel
    dv_n = np.linalg.norm(dv)
    max_dv = self.accel * DT * 2
    if dv_n > max_dv:
      dv = dv * max_dv / dv_n
    self.cmd_vel = self.cmd_vel + dv
    self.cmd_pos = self.cmd_pos + self.cmd_vel * DT
    if np.linalg.norm(goal_pos - self.cmd_pos) < 5e-4 and np.linalg.norm(self.cmd_vel) < 0.02:
      self.cmd_pos = goal_pos.copy()
      self.cmd_vel = np.zeros(3)
    # orientation: slerp by at most ang_speed * DT
    rel = Rotation.from_matrix(goal_rot @ self.cmd_rot.T)
    ang = rel.magnitude()
    frac = 1.0 if ang < 1e-6 else min(1.0, self.ang_speed * DT / ang)
    self.cmd_rot = Rotation.from_rotvec(rel.as_rotvec() * frac).as_matrix() @ self.cmd_rot
    return np.linalg.norm(goal_pos - self.cmd_pos) < 1e-6 and ang * (1 - frac) < 1e-4

  def act(self, env, obs) -> np.ndarray:
    while not self.done:
      ph = self._phases[self._i]
      if ph.track and ph.target is not None:
        self._goal = ph.target(self, env)
      reached = self._track(*self._goal, ph.speed)
      self.grip = ph.gripper
      self._steps += 1
      actual_ok = np.linalg.norm(obs["robot0_eef_pos"] - self._goal[0]) < ph.tol or ph.target is None
      if reached and actual_ok:
        self._held += 1
      if (self._held > ph.hold) or self._steps > ph.timeout:
        self._i += 1
        self._start_phase(env, obs)
      break
    pos = self.cmd_pos
    if self.noise > 0:
      pos = pos + self.rng.normal(0, self.noise, 3)
    aa = Rotation.from_matrix(self.cmd_rot).as_rotvec()
    return np.concatenate([pos, aa, [self.grip]])

  # -- helpers for subclasses
  def eef_pose(self, env):
    p = env.privileged()
    return np.array(p["robot0_eef_pos"]), frames.hand_quat_to_site_matrix(p["robot0_eef_quat"])

  def phases(self) -> list[Phase]:
    raise NotImplementedError


def _grasp_phases(obj_pos_fn, yaw_fn, *, above=0.08, z_off=0.0, close_steps=8) -> list[Phase]:
  """Approach above an object, descend onto it and close."""
  def approach(ex, env):
    yaw = yaw_fn(ex, env)
    ex.mem["grasp_yaw"] = yaw
    return obj_pos_fn(env) + np.array([0, 0, above]), down(yaw)

  def descend(ex, env):
    return obj_pos_fn(env) + np.array([0, 0, z_off]), down(ex.mem["grasp_yaw"])

  return [
      Phase("approach", approach, -1.0, speed=0.3, tol=0.02),
      Phase("descend", descend, -1.0, speed=0.12, tol=0.008, hold=1),
      Phase("close", None, 1.0, hold=close_steps),
  ]


def _closest_yaw(ex, candidate: float, period: float) -> float:
  cur = Rotation.from_matrix(ex.cmd_rot @ _R_DOWN.T).as_euler("zyx")[0]
  return cur + wrap_to(candidate - cur, period)


class LiftExpert(ScriptedExpert):
  task = "Lift"
  max_steps = 200

  def phases(self):
    cube = lambda env: np.array(env.privileged()["cube_pos"])
    yaw = lambda ex, env: _closest_yaw(ex, quat_yaw(env.privileged()["cube_quat"]), np.pi / 2)

    def lift(ex, env):
      return ex.cmd_pos + np.array([0, 0, 0.15]), ex.cmd_rot
    return _grasp_phases(cube, yaw, z_off=-0.003) + [Phase("lift", lift, 1.0, speed=0.2, tol=0.03)]


class StackExpert(ScriptedExpert):
  task = "Stack"
  max_steps = 300

  def phases(self):
    cube_a = lambda env: np.array(env.privileged()["cubeA_pos"])

    def yaw(ex, env):
      # Of the two grasps (cube faces mod 90 deg), open the fingers across the direction to
      # cube B so a finger does not land on it when the cubes are close.
      p = env.privileged()
      theta = quat_yaw(p["cubeA_quat"])
      d = np.asarray(p["cubeB_pos"][:2]) - np.asarray(p["cubeA_pos"][:2])
      to_b = np.arctan2(d[1], d[0])
      best = min((theta, theta + np.pi / 2),
                 key=lambda psi: abs(np.cos(psi + np.pi / 2 - to_b)))  # finger axis = yaw + 90
      return _closest_yaw(ex, best, np.pi)

    def lift(ex, env):
      p = env.privileged()
      return np.array([*ex.cmd_pos[:2], p["table_z"] + 0.15]), ex.cmd_rot

    def _place_target(ex, env, clearance):
      p = env.privileged()
      grip, _ = ex.eef_pose(env)
      offset = grip - p["cubeA_pos"]                     # grasp offset of the held cube
      a_half = ex.mem.get("a_half_meas", 0.02)
      b_top = p["cubeB_pos"][2] + (p["cubeB_pos"][2] - p["table_z"])
      tgt = np.array([*p["cubeB_pos"][:2], b_top + a_half + clearance]) + offset
      return tgt, ex.cmd_rot

    def above(ex, env):
      p = env.privileged()
      tgt, rot = _place_target(ex, env, 0.04)
      tgt[2] = max(tgt[2], p["table_z"] + 0.15)
      return tgt, rot

    def lower(ex, env):
      return _place_target(ex, env, 0.006)

    def retreat(ex, env):
      return ex.cmd_pos + np.array([0, 0, 0.08]), ex.cmd_rot

    def measure(ex, env):  # half-height of cube A once it rests on the table (before grasp)
      p = env.privileged()
      ex.mem["a_half_meas"] = float(p["cubeA_pos"][2] - p["table_z"])
      return ex.cmd_pos.copy(), ex.cmd_rot

    grasp = _grasp_phases(cube_a, yaw, z_off=-0.003)
    return ([grasp[0], Phase("measure", measure, -1.0)] + grasp[1:] + [
        Phase("lift", lift, 1.0, speed=0.2, tol=0.03),
        Phase("above", above, 1.0, speed=0.25, tol=0.01, hold=2),
        Phase("lower", lower, 1.0, speed=0.08, tol=0.008, hold=2),
        Phase("release", None, -1.0, hold=6),
        Phase("retreat", retreat, -1.0, speed=0.2, tol=0.03),
    ])


def _nut_yaw_goal(nut_yaw: float, grip_rot: np.ndarray) -> float:
  """Nut yaw to insert with: the square peg accepts yaw 0 mod 90 deg. The handle
  (nut local +x) must not point away from the robot (+x world: out of the Panda's reach), and
  the wrist must stay well inside joint-7 limits; among those, rotate the least."""
  grip_yaw = Rotation.from_matrix(grip_rot @ _R_DOWN.T).as_euler("zyx")[0]
  best, best_cost = None, np.inf
  for k in range(-4, 5):
    goal = k * np.pi / 2
    delta = goal - nut_yaw
    if abs(delta) > np.pi * 0.76 or np.cos(goal) > 0.5 or abs(grip_yaw + delta) > 1.9:
      continue
    if abs(delta) < best_cost:
      best, best_cost = goal, abs(delta)
  if best is None:  # fall back: smallest rotation onto the peg's symmetry
    best = nut_yaw + wrap_to(-nut_yaw, np.pi / 2)
  return float(best)


class NutAssemblySquareExpert(ScriptedExpert):
  task = "NutAssemblySquare"
  max_steps = 400

  def phases(self):
    handle = lambda env: np.array(env.privileged()["handle_pos"])

    def grasp_yaw(ex, env):
      # handle's long axis = nut local x; fingers (site x axis) must close across it.
      return _closest_yaw(ex, quat_yaw(env.privileged()["SquareNut_quat"]), np.pi)

    def lift(ex, env):
      p = env.privileged()
      return np.array([*ex.cmd_pos[:2], p["table_z"] + 0.23]), ex.cmd_rot

    def nut_target(ex, env, height):
      p = env.privileged()
      nut_pos = np.array(p["SquareNut_pos"])
      nut_rot = Rotation.from_quat(p["SquareNut_quat"]).as_matrix()
      if "rel" not in ex.mem:  # freeze the grasp transform once the nut is lifted
        g_pos, g_rot = ex.eef_pose(env)
        ex.mem["nut_yaw_goal"] = _nut_yaw_goal(quat_yaw(p["SquareNut_quat"]), g_rot)
        ex.mem["rel"] = (g_rot.T @ nut_rot, g_rot.T @ (nut_pos - g_pos))
      rel_rot, rel_pos = ex.mem["rel"]
      want_rot = Rotation.from_euler("z", ex.mem["nut_yaw_goal"]).as_matrix()
      want_pos = np.array([*p["peg_pos"][:2], p["table_z"] + height])
      g_rot = want_rot @ rel_rot.T
      # keep the gripper pointing straight down (drop roll/pitch the nut picked up by slipping)
      g_rot = down(Rotation.from_matrix(g_rot @ _R_DOWN.T).as_euler("zyx")[0])
      return want_pos - g_rot @ rel_pos, g_rot

    def retreat(ex, env):
      return ex.cmd_pos + np.array([0, 0, 0.1]), ex.cmd_rot

    return _grasp_phases(handle, grasp_yaw, z_off=-0.005, close_steps=10) + [
        Phase("lift", lift, 1.0, speed=0.2, tol=0.03),
        Phase("above_peg", lambda ex, env: nut_target(ex, env, 0.20), 1.0, speed=0.25, tol=0.01, hold=4),
        Phase("insert", lambda ex, env: nut_target(ex, env, 0.035), 1.0, speed=0.08, tol=0.015, hold=2),
        Phase("release", None, -1.0, hold=6),
        Phase("retreat", retreat, -1.0, speed=0.2, tol=0.03),
    ]


class PickPlaceCanExpert(ScriptedExpert):
  task = "PickPlaceCan"
  max_steps = 400

  def phases(self):
    can = lambda env: np.array(env.privileged()["Can_pos"])
    keep_yaw = lambda ex, env: _closest_yaw(ex, 0.0, np.pi / 2)
    carry_z = 1.05

    def lift(ex, env):
      return np.array([*ex.cmd_pos[:2], carry_z]), ex.cmd_rot

    def above(ex, env):
      p = env.privileged()
      offset = ex.eef_pose(env)[0] - p["Can_pos"]
      # The success window is +-bin/4 around the target placement (0.0975 x 0.1225 m); aim at
      # its robot-side part: the placement's centre is at the edge of the Panda's reach.
      goal_xy = p["target_pos"][:2] + np.array([-0.06, -0.08])
      return np.array([*(goal_xy + offset[:2]), carry_z]), ex.cmd_rot

    def lower(ex, env):
      p = env.privileged()
      return np.array([*ex.cmd_pos[:2], p["target_pos"][2] + 0.14]), ex.cmd_rot

    def retreat(ex, env):
      return ex.cmd_pos + np.array([0, 0, 0.08]), ex.cmd_rot

    return _grasp_phases(can, keep_yaw, above=0.12, z_off=0.01, close_steps=8) + [
        Phase("lift", lift, 1.0, speed=0.25, tol=0.03),
        Phase("above_bin", above, 1.0, speed=0.3, tol=0.02, hold=2),
        Phase("lower", lower, 1.0, speed=0.15, tol=0.02),
        Phase("release", None, -1.0, hold=8),
        Phase("retreat", retreat, -1.0, speed=0.2, tol=0.03),
    ]


EXPERTS = {e.task: e for e in (LiftExpert, StackExpert, NutAssemblySquareExpert, PickPlaceCanExpert)}


def make_expert(task: str, **kwargs) -> ScriptedExpert:
  from decoupled_jax.sim.robosuite_env import canonical_task
  return EXPERTS[canonical_task(task)](**kwargs)


def run_expert_episode(env, expert: ScriptedExpert, seed: int, *, max_steps: int | None = None,
                       record: bool = True, extra_steps_after_success: int = 0) -> dict:
  """Roll out one expert episode; stops `extra_steps_after_success` steps after first success.

  The episode is a pure function of (`seed`, the expert's parameters): the same seed gives the
  same arrays bit for bit, in any process, whatever ran before.

  Returns {'success', 'length', 'seed', and when `record`: 'obs' (dict of (T, ...)),
  'actions' (T, 7), 'states' (T, S), 'rewards' (T,), 'dones' (T,)}; obs[t] is the observation
  the action at t was chosen from (robomimic layout).
  """
  max_steps = max_steps or expert.max_steps
  obs = env.reset(seed)  # the env re-seeds everything (incl. the model build) from `seed`
  expert.reset(env, obs, seed)
  obs_list, actions, states, rewards, dones = [], [], [], [], []
  success, after = False, 0
  for _ in range(max_steps):
    a = expert.act(env, obs)
    if record:
      obs_list.append(obs)
      states.append(env.get_state())
    obs, r, _, info = env.step(a)
    actions.append(a)
    rewards.append(r)
    success = success or info["success"]
    dones.append(bool(success))
    if success:
      after += 1
      if after > extra_steps_after_success:
        break
  out = {"success": bool(success), "length": len(actions), "seed": int(seed)}
  if record:
    out["obs"] = {k: np.stack([o[k] for o in obs_list]) for k in obs_list[0]}
    out["actions"] = np.asarray(actions, np.float64)
    out["states"] = np.asarray(states, np.float64)
    out["rewards"] = np.asarray(rewards, np.float64)
    out["dones"] = np.asarray(dones, np.int64)
  return out
