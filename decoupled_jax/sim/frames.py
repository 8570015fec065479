"""The frame of the absolute OSC action orientation vs. `robot0_eef_quat` (robosuite 1.5, Panda).

What the controller consumes
  `RobosuiteEnv` configures the BASIC composite controller's arm as OSC_POSE with
  `input_type='absolute'` and `input_ref_frame='world'`. The 7-D action
  `[p(3), aa(3), g]` is then the world-frame target of the controller's reference site
  `gripper0_right_grip_site` (robosuite/controllers/parts/arm/osc.py: `goal_pos = p`,
  `goal_ori = Rotation.from_rotvec(aa)`, compared with `site_xpos`/`site_xmat` of that site).

What the observation reports
  * `robot0_eef_pos` = world position of the same site ⇒ action position == eef_pos (identity).
  * `robot0_eef_quat` (xyzw) = orientation of the *body* `robot0_right_hand`, not of the site
    (robosuite issue #298; kept for compatibility with every robomimic/MimicGen dataset,
    which were recorded with that key). `robot0_eef_quat_site` would be the site.
  The grip site is rigidly attached to the hand with a constant rotation, measured here:

      R_action = R(robot0_eef_quat) @ R_z(-90°)          (HAND_TO_SITE below)

  i.e. the reference's v1 relation T_action = T_obs · RotZ(90°)⁻¹ (docs/method.md §6). It is
  *not* the identity, so converting an observed pose into an action must apply it.

Verification (run `verify_hold_still` / tests): resetting Lift and commanding
`eef_pose_to_action(obs)` for 40 steps moved the site by < 1e-8 m and the hand by < 1e-7 rad;
commanding the raw `robot0_eef_quat` as the orientation instead rotated the hand by 1.57 rad.

Library convention (docs/architecture.md, Frames): positions are the grip site in the world
frame; the orientation stored in `actions` is the *grip-site* orientation (= what the controller
takes). Stage-1 FK targets for the orientation must therefore either target the site frame or
be converted with `hand_quat_to_site_matrix` — the two differ by this constant R_z(-90°).
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from decoupled_jax.kinematics.panda import hand_to_site_rotation

# R_hand^T R_site for the Panda gripper, R_z(-90°): one home, read from robosuite's MJCF by
# the kinematics module (tests/test_sim.py measures it on a live env).
HAND_TO_SITE = np.round(hand_to_site_rotation(), 12)


def hand_quat_to_site_matrix(quat_xyzw: np.ndarray) -> np.ndarray:
  """`robot0_eef_quat` (..., 4) -> controller-frame rotation matrices (..., 3, 3)."""
  q = np.asarray(quat_xyzw, np.float64)
  m = Rotation.from_quat(q.reshape(-1, 4)).as_matrix() @ HAND_TO_SITE
  return m.reshape(q.shape[:-1] + (3, 3))


def site_matrix_to_hand_quat(m: np.ndarray) -> np.ndarray:
  """Inverse of `hand_quat_to_site_matrix` (xyzw, w >= 0)."""
  m = np.asarray(m, np.float64)
  q = Rotation.from_matrix(m.reshape(-1, 3, 3) @ HAND_TO_SITE.T).as_quat()
  q = q * np.where(q[:, 3:4] < 0, -1.0, 1.0)
  return q.reshape(m.shape[:-2] + (4,))


def eef_quat_to_action_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
  """Observed `robot0_eef_quat` -> the axis-angle an absolute action must carry for that pose."""
  m = hand_quat_to_site_matrix(quat_xyzw)
  return Rotation.from_matrix(m.reshape(-1, 3, 3)).as_rotvec().reshape(m.shape[:-2] + (3,))


def action_axis_angle_to_eef_quat(aa: np.ndarray) -> np.ndarray:
  """Action orientation (axis-angle) -> the `robot0_eef_quat` reached when it is tracked."""
  aa = np.asarray(aa, np.float64)
  m = Rotation.from_rotvec(aa.reshape(-1, 3)).as_matrix()
  return site_matrix_to_hand_quat(m).reshape(aa.shape[:-1] + (4,))


def eef_pose_to_action(eef_pos: np.ndarray, eef_quat: np.ndarray, gripper) -> np.ndarray:
  """Observed pose (+ gripper command ±1) -> 7-D absolute action that holds that pose."""
  eef_pos = np.asarray(eef_pos, np.float64)
  g = np.broadcast_to(np.asarray(gripper, np.float64), eef_pos.shape[:-1])[..., None]
  return np.concatenate([eef_pos, eef_quat_to_action_axis_angle(eef_quat), g], axis=-1)


def measure_hand_to_site(env) -> np.ndarray:
  """Measure R_hand^T R_site on a live `RobosuiteEnv` (should equal HAND_TO_SITE)."""
  sim, robot = env.env.sim, env.env.robots[0]
  rs = sim.data.site_xmat[robot.eef_site_id["right"]].reshape(3, 3)
  rh = sim.data.body_xmat[sim.model.body_name2id(robot.robot_model.eef_name["right"])].reshape(3, 3)
  return rh.T @ rs


def verify_hold_still(env, steps: int = 40, seed: int = 0) -> dict:
  """Command the current eef pose for `steps` steps; report drift (the check in the docstring)."""
  obs = env.reset(seed)
  a = eef_pose_to_action(obs["robot0_eef_pos"], obs["robot0_eef_quat"], -1.0)
  p0, q0, j0 = obs["robot0_eef_pos"].copy(), obs["robot0_eef_quat"].copy(), obs["robot0_joint_pos"].copy()
  for _ in range(steps):
    obs, *_ = env.step(a)
  rot = (Rotation.from_quat(obs["robot0_eef_quat"]) * Rotation.from_quat(q0).inv()).magnitude()
  return {"pos_drift_m": float(np.abs(obs["robot0_eef_pos"] - p0).max()),
          "rot_drift_rad": float(rot),
          "joint_drift_rad": float(np.abs(obs["robot0_joint_pos"] - j0).max())}
