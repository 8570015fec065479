"""Rotation conversions shared by stage 1 (FK targets), datasets and evaluation.

Conventions (fixed for the whole library):
  * Quaternions are **xyzw** (scalar last), the order robosuite reports `robot0_eef_quat`
    and scipy uses. The reference code read them as wxyz (docs/method.md §11.3); we do not.
  * The 6-D rotation is the first two **rows** of the rotation matrix, flattened
    (pytorch3d `matrix_to_rotation_6d`): [R00, R01, R02, R10, R11, R12]. Decoding uses
    Gram-Schmidt and stacks b1, b2, b1 x b2 as rows.
  * Axis-angle is a 3-vector axis * angle (robosuite OSC_POSE orientation input).

Every function accepts numpy or jax arrays with arbitrary leading batch dimensions and
returns the same array type (numpy in, numpy out), so the data pipeline can stay in numpy
and the model code in jax.
"""
from __future__ import annotations

import numpy as np
import jax.numpy as jnp


def _xp(x):
  return np if isinstance(x, np.ndarray) else jnp


def quat_xyzw_to_matrix(q):
  xp = _xp(q)
  q = q / xp.linalg.norm(q, axis=-1, keepdims=True)
  x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
  rows = [
      [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
  ]
  return xp.stack([xp.stack(r, axis=-1) for r in rows], axis=-2)


def matrix_to_quat_xyzw(m):
  """Rotation matrix -> unit quaternion (xyzw) with w >= 0; numerically safe branchless form."""
  xp = _xp(m)
  m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
  m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
  m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
  # Four candidate solutions; pick the best conditioned one per element.
  qw = xp.sqrt(xp.maximum(0.0, 1 + m00 + m11 + m22)) / 2
  qx = xp.sqrt(xp.maximum(0.0, 1 + m00 - m11 - m22)) / 2
  qy = xp.sqrt(xp.maximum(0.0, 1 - m00 + m11 - m22)) / 2
  qz = xp.sqrt(xp.maximum(0.0, 1 - m00 - m11 + m22)) / 2
  eps = 1e-12
  cand_w = xp.stack([(m21 - m12) / (4 * qw + eps), (m02 - m20) / (4 * qw + eps),
                     (m10 - m01) / (4 * qw + eps), qw], axis=-1)
  cand_x = xp.stack([qx, (m01 + m10) / (4 * qx + eps), (m02 + m20) / (4 * qx + eps),
                     (m21 - m12) / (4 * qx + eps)], axis=-1)
  cand_y = xp.stack([(m01 + m10) / (4 * qy + eps), qy, (m12 + m21) / (4 * qy + eps),
                     (m02 - m20) / (4 * qy + eps)], axis=-1)
  cand_z = xp.stack([(m02 + m20) / (4 * qz + eps), (m12 + m21) / (4 * qz + eps), qz,
                     (m10 - m01) / (4 * qz + eps)], axis=-1)
  cands = xp.stack([cand_w, cand_x, cand_y, cand_z], axis=-2)  # (..., 4, 4)
  best = xp.argmax(xp.stack([qw, qx, qy, qz], axis=-1), axis=-1)
  q = xp.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
  q = q * xp.where(q[..., 3:4] < 0, -1.0, 1.0)
  return q / xp.linalg.norm(q, axis=-1, keepdims=True)


def matrix_to_rot6d(m):
  return m[..., :2, :].reshape(m.shape[:-2] + (6,))


def rot6d_to_matrix(r):
  xp = _xp(r)
  a1, a2 = r[..., 0:3], r[..., 3:6]
  b1 = a1 / xp.maximum(xp.linalg.norm(a1, axis=-1, keepdims=True), 1e-8)
  a2 = a2 - xp.sum(b1 * a2, axis=-1, keepdims=True) * b1
  b2 = a2 / xp.maximum(xp.linalg.norm(a2, axis=-1, keepdims=True), 1e-8)
  b3 = xp.cross(b1, b2)
  return xp.stack([b1, b2, b3], axis=-2)


def axis_angle_to_matrix(aa):
  xp = _xp(aa)
  angle = xp.linalg.norm(aa, axis=-1, keepdims=True)
  axis = aa / xp.maximum(angle, 1e-12)
  x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
  c, s = xp.cos(angle[..., 0]), xp.sin(angle[..., 0])
  C = 1 - c
  rows = [
      [c + x * x * C, x * y * C - z * s, x * z * C + y * s],
      [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
      [z * x * C - y * s, z * y * C + x * s, c + z * z * C],
  ]
  return xp.stack([xp.stack(r, axis=-1) for r in rows], axis=-2)


def quat_xyzw_to_axis_angle(q):
  xp = _xp(q)
  q = q / xp.linalg.norm(q, axis=-1, keepdims=True)
  q = q * xp.where(q[..., 3:4] < 0, -1.0, 1.0)  # angle in [0, pi]
  sin_half = xp.linalg.norm(q[..., :3], axis=-1, keepdims=True)
  angle = 2 * xp.arctan2(sin_half, q[..., 3:4])
  # angle / sin(angle/2) -> 2 as angle -> 0.
  scale = xp.where(sin_half > 1e-8, angle / xp.maximum(sin_half, 1e-8), 2.0)
  return q[..., :3] * scale


def axis_angle_to_quat_xyzw(aa):
  xp = _xp(aa)
  angle = xp.linalg.norm(aa, axis=-1, keepdims=True)
  half = angle / 2
  scale = xp.where(angle > 1e-8, xp.sin(half) / xp.maximum(angle, 1e-8), 0.5)
  return xp.concatenate([aa * scale, xp.cos(half)], axis=-1)


def matrix_to_axis_angle(m):
  return quat_xyzw_to_axis_angle(matrix_to_quat_xyzw(m))


def quat_xyzw_to_rot6d(q):
  return matrix_to_rot6d(quat_xyzw_to_matrix(q))


def rot6d_to_axis_angle(r):
  return matrix_to_axis_angle(rot6d_to_matrix(r))


def axis_angle_to_rot6d(aa):
  return matrix_to_rot6d(axis_angle_to_matrix(aa))


def rotation_angle_between(m1, m2):
  """Geodesic angle (radians) between rotation matrices; used for stage-1 rotation error."""
  xp = _xp(m1)
  rel = xp.swapaxes(m1, -1, -2) @ m2
  cos = (xp.trace(rel, axis1=-2, axis2=-1) - 1) / 2
  return xp.arccos(xp.clip(cos, -1.0, 1.0))


# Action-space conversion: env actions are 7-D [pos(3), axis-angle(3), gripper(1)];
# the model predicts 10-D [pos(3), rot6d(6), gripper(1)] (docs/method.md §6).
def env_action_to_model(actions):
  xp = _xp(actions)
  return xp.concatenate(
      [actions[..., :3], axis_angle_to_rot6d(actions[..., 3:6]), actions[..., 6:7]], axis=-1)


def model_action_to_env(actions):
  xp = _xp(actions)
  return xp.concatenate(
      [actions[..., :3], rot6d_to_axis_angle(actions[..., 3:9]), actions[..., 9:10]], axis=-1)
