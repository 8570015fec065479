"""A bimanual ALOHA task as our policies see it (simulator side: numpy + gym-aloha, no jax).

`AlohaTask(task, control='joint'|'ee', camera_size=None|(H, W))` builds one of gym-aloha's
two simulated tasks (two ViperX 300s arms, MuJoCo through dm_control) the way
`gym_aloha/env.py` does: its MJCF from `gym_aloha/assets`, its task class
(`gym_aloha.tasks.sim` for joint control, `gym_aloha.tasks.sim_end_effector` for the mocap
variant the scripted experts drive) and dm_control's `control.Environment` at 50 Hz (DT =
0.02 s, 10 physics substeps). docs/aloha.md has the protocol.

  task           'transfer_cube': the right arm picks a red cube, hands it to the left arm
                 'insertion': left picks the socket, right the peg, the peg goes in the socket
  control='joint'  actions (14): [left 6 joint targets (rad), left gripper (0 closed .. 1
                 open, normalised finger position), right 6, right gripper] (gym-aloha's order)
  control='ee'   actions (16): [left xyz, left quat (wxyz), left gripper, right xyz, right
                 quat, right gripper]: mocap targets welded to each gripper (scripted experts)

Observations (`obs` dict; obs[t] is what the action at t is chosen from):
  qpos       (14)  gym-aloha's order: left 6 joints, left gripper normalised (0 closed, 1
                   open), right 6 joints, right gripper
  qvel       (14)  the same joints' velocities (grippers: normalised finger velocity)
  env_state  (7 | 14)  the object poses: transfer_cube the box's pos + wxyz quat; insertion
                   peg then socket
  top        (H, W, 3) uint8, the overhead camera, only with `camera_size`
  (ee control also returns mocap_pose_left / mocap_pose_right (7) and gripper_ctrl (4).)

MuJoCo 2 weld emulation (control='ee' only): gym-aloha's mocap welds (solimp .25) come from
ACT, tuned under MuJoCo 2.3, whose constraint regulariser gave all six weld rows the gripper
body's *translational* inverse weight (mj_diagApprox reset its weld-row counter on every row).
MuJoCo 3 gives the three rotational rows the rotational one -- 400x larger for the ViperX
gripper_link (589.6 vs 1.48) -- so the weld's orientation is ~400x softer, loses to the wrist
joints' frictionloss (30 Nm): the gripper misses its commanded orientation by 13-49 deg and
ACT's waypoints miss. `emulate_mujoco2_weld` sets each welded gripper_link's rotational
body_invweight0 to its translational one, which reproduces MuJoCo 2's weld rows exactly
(contacts read a body's rotational weight only in torsional-friction rows, scaled there by
friction^2 ~ 2.5e-5: negligible). The joint task, which demonstrations and policies run in,
is gym-aloha's model unchanged.

Object poses come from gym-aloha's own samplers (`sample_box_pose`, `sample_insertion_pose`)
seeded with the episode's seed, or are given (replaying a trajectory from its start).
gym-aloha's tasks render three 480x640 cameras in every observation; here no camera is
rendered unless asked for (`camera_size`), which makes a step ~100x cheaper.
Reward: the task's staged contact reward (0..4); success = reward == max_reward (4).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

TASKS = ("transfer_cube", "insertion")
CONTROLS = ("joint", "ee")
FPS = 50
EPISODE_LEN = 400          # ACT's sim episode_len for both scripted tasks (docs/aloha.md)
NUM_ARM_QPOS = 16          # 2 x (6 arm joints + 2 fingers) before the objects' free joints
CAMERA = "top"
OBS_KEYS = ("qpos", "qvel", "env_state", CAMERA)
ENV_STATE_DIM = {"transfer_cube": 7, "insertion": 14}
ACTION_DIM = {"joint": 14, "ee": 16}


def check_task(task: str) -> str:
  if task not in TASKS:
    raise ValueError(f"unknown ALOHA task {task!r}; expected one of {list(TASKS)}")
  return task


def parse_camera_size(text: str) -> Optional[tuple[int, int]]:
  """'48x64' -> (48, 64) (height x width); '' -> None."""
  text = (text or "").strip()
  if not text:
    return None
  try:
    h, w = (int(v) for v in text.lower().split("x"))
  except ValueError:
    raise ValueError(f"camera size must be HxW (e.g. 48x64), got {text!r}") from None
  if not (8 <= h <= 2048 and 8 <= w <= 2048):
    raise ValueError(f"camera size {text!r}: height and width must be in [8, 2048]")
  return h, w


def sample_object_pose(task: str, seed: int) -> np.ndarray:
  """gym-aloha's own sampler for `task`, seeded with `seed` (< 2**32): (7,) or (14,)."""
  from gym_aloha.utils import sample_box_pose, sample_insertion_pose
  check_task(task)
  seed = int(seed) % 2**32
  if task == "transfer_cube":
    return np.asarray(sample_box_pose(seed), np.float64)
  return np.concatenate(sample_insertion_pose(seed)).astype(np.float64)


def _task_classes(task: str, control: str):
  """(MJCF file name, gym-aloha task class) -> subclassed to set the object pose we give and
  to skip gym-aloha's per-step rendering of three 480x640 cameras."""
  from gym_aloha.tasks import sim, sim_end_effector as ee
  base = {("transfer_cube", "joint"): ("bimanual_viperx_transfer_cube.xml", sim.TransferCubeTask),
          ("insertion", "joint"): ("bimanual_viperx_insertion.xml", sim.InsertionTask),
          ("transfer_cube", "ee"): ("bimanual_viperx_end_effector_transfer_cube.xml",
                                    ee.TransferCubeEndEffectorTask),
          ("insertion", "ee"): ("bimanual_viperx_end_effector_insertion.xml",
                                ee.InsertionEndEffectorTask)}[(task, control)]
  xml, cls = base

  class Task(cls):
    object_pose: Optional[np.ndarray] = None

    def initialize_episode(self, physics):
      if control == "joint":
        # gym-aloha's joint tasks read the object pose(s) from the module global BOX_POSE
        # (what gym_aloha/env.py sets before every reset)
        sim.BOX_POSE[0] = np.array(self.object_pose)
        cls.initialize_episode(self, physics)
      else:
        # the mocap tasks draw an unseeded pose themselves: set the robots as they do, then ours
        self.initialize_robots(physics)
        n = len(self.object_pose)
        physics.data.qpos[NUM_ARM_QPOS:NUM_ARM_QPOS + n] = self.object_pose
        ee.BimanualViperXEndEffectorTask.initialize_episode(self, physics)

    def get_observation(self, physics):
      obs = {"qpos": self.get_qpos(physics), "qvel": self.get_qvel(physics),
             "env_state": self.get_env_state(physics)}
      if control == "ee":
        obs["mocap_pose_left"] = np.concatenate([physics.data.mocap_pos[0],
                                                 physics.data.mocap_quat[0]]).copy()
        obs["mocap_pose_right"] = np.concatenate([physics.data.mocap_pos[1],
                                                  physics.data.mocap_quat[1]]).copy()
        obs["gripper_ctrl"] = physics.data.ctrl.copy()
      return obs

  return xml, Task


WELDED_BODIES = ("vx300s_left/gripper_link", "vx300s_right/gripper_link")


def emulate_mujoco2_weld(physics) -> None:
  """Give the mocap welds MuJoCo 2.x's regularisation (module doc): each welded gripper_link's
  rotational body_invweight0 := its translational one (mj_diagApprox reads these every step;
  mj_resetData does not recompute them)."""
  m = physics.model
  for name in WELDED_BODIES:
    b = m.name2id(name, "body")
    m.body_invweight0[b, 1] = m.body_invweight0[b, 0]


class AlohaTask:
  """One ALOHA task's dm_control env with the policy's observation layout (module doc)."""

  def __init__(self, task: str, control: str = "joint",
               camera_size: Optional[Sequence[int]] = None):
    os.environ.setdefault("MUJOCO_GL", "egl")     # before dm_control imports mujoco's GL
    from dm_control import mujoco
    from dm_control.rl import control as dm_control
    from gym_aloha.constants import ASSETS_DIR, DT
    self.task = check_task(task)
    if control not in CONTROLS:
      raise ValueError(f"unknown ALOHA control {control!r}; expected one of {list(CONTROLS)}")
    self.control = control
    if camera_size is not None:
      camera_size = tuple(int(v) for v in camera_size)
      if len(camera_size) != 2 or min(camera_size) < 8:
        raise ValueError(f"camera_size must be (height, width) >= 8, got {camera_size}")
    self.camera_size = camera_size
    self.action_dim = ACTION_DIM[control]
    self.max_steps = EPISODE_LEN
    xml, cls = _task_classes(task, control)
    self.physics = mujoco.Physics.from_xml_path(str(ASSETS_DIR / xml))
    self._task = cls(random=0)
    self.max_reward = int(self._task.max_reward)
    # time_limit=inf: the episode length is ours (gym_aloha/env.py does the same)
    self.env = dm_control.Environment(self.physics, self._task, float("inf"),
                                      control_timestep=DT, n_sub_steps=None,
                                      flat_observation=False)
    if control == "ee":
      emulate_mujoco2_weld(self.physics)
    nq = int(self.physics.model.nq)
    if nq != NUM_ARM_QPOS + ENV_STATE_DIM[task]:
      raise RuntimeError(f"{xml}: {nq} qpos, expected {NUM_ARM_QPOS + ENV_STATE_DIM[task]} "
                         f"(a different gym-aloha version?)")
    self.object_pose: Optional[np.ndarray] = None
    self.reward = 0

  # -- episodes -------------------------------------------------------------------------------
  def reset(self, seed: Optional[int] = None, *, object_pose=None) -> dict:
    """A new episode from gym-aloha's pose sampler seeded with `seed`, or from `object_pose`
    ((7,) / (14,): pos + wxyz quat per object); returns the first observation."""
    if (seed is None) == (object_pose is None):
      raise ValueError("reset needs exactly one of `seed` or `object_pose`")
    if object_pose is None:
      pose = sample_object_pose(self.task, seed)
    else:
      pose = np.asarray(object_pose, np.float64).reshape(-1)
      if pose.shape != (ENV_STATE_DIM[self.task],) or not np.all(np.isfinite(pose)):
        raise ValueError(f"{self.task}: object_pose must be {ENV_STATE_DIM[self.task]} finite "
                         f"numbers (pos + wxyz quat per object), got shape {pose.shape}")
    self.object_pose = pose
    self._task.object_pose = pose
    self.reward = 0
    ts = self.env.reset()
    return self._obs(ts.observation)

  def step(self, action) -> tuple[dict, bool]:
    """One 50 Hz step; returns (observation, success now)."""
    a = np.asarray(action, np.float64).reshape(-1)
    if a.shape != (self.action_dim,) or not np.all(np.isfinite(a)):
      raise ValueError(f"ALOHA {self.control} action must be {self.action_dim} finite numbers, "
                       f"got shape {a.shape}")
    ts = self.env.step(a)
    self.reward = int(ts.reward or 0)
    return self._obs(ts.observation), self.success

  @property
  def success(self) -> bool:
    return self.reward == self.max_reward

  def render(self, size: Optional[Sequence[int]] = None) -> np.ndarray:
    """The top camera at `size` (default camera_size, else 240x320) as uint8 (H, W, 3)."""
    h, w = size or self.camera_size or (240, 320)
    return np.ascontiguousarray(self.physics.render(height=int(h), width=int(w),
                                                    camera_id=CAMERA), np.uint8)

  def sim_state(self) -> np.ndarray:
    """The flattened MuJoCo state (qpos, qvel, act) before the next action."""
    return np.asarray(self.physics.get_state(), np.float64).copy()

  def close(self):
    try:
      self.physics.free()
    except Exception:  # noqa: BLE001 - best effort; the GL context goes with the process
      pass

  def _obs(self, raw) -> dict:
    out = {k: np.asarray(v, np.float64).copy() for k, v in raw.items()}
    if self.camera_size is not None:
      out[CAMERA] = self.render()
    return out
