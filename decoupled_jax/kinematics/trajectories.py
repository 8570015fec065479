"""On-device stage-1 data: random smooth joint trajectories of any robot and their FK poses.

`make_fk_window_sampler(config, robot=None)` returns a sampler; `sampler(rng, batch_size)` gives
`cond (B, H, Dc)` and `target (B, H, Da)` over the SAME H frames at `fps` (20 Hz), like the
demo windows of spec §1.1 (condition frames t-H+1..t, target frames t-H+1..t). Everything is
a pure function of the rng and the model arrays, so `sampler.sample_pure(rng, sampler.params, B)`
can be called inside a jitted train step (no host round-trip). `robot`: a
`kinematics.robot.RobotSpec`, the `config.robot` section or a loaded `Robot`; None = the
built-in Panda with `config.site` as its end effector (robot.py describes robots).

Vectors (robot.py `RobotInfo`): the *pose* vector is [pos(3), rot6d(6)(, gripper)] per
end-effector site, in the robot's base frame (the Panda: robosuite's world frame, position =
`robot0_eef_pos`, orientation = the grip site's = the absolute-action frame, or `site='hand'`
for the `robot0_eef_quat` body orientation); rot6d = first two rows of the rotation matrix
(`decoupled_jax.data.rotation`). The *joint* vector is [joints, grippers]. The target is the
pose vector (`action_space='ee_pose'`; the Panda's 10-D action) or the joint vector
(`'joint_pos'`). Condition (`signal`, spec §1.3): 'jp' = the joint vector (Panda: 8-D);
'eepose' = the pose vector (10-D); 'none' = zeros the size of the joint vector; 'jv' (ours) =
[joints, q_{t+1} - q_t, grippers] (Panda: 15-D; H+1 frames are generated), the joint step to
the next frame beside the joints, so that a delta target (below) is a smooth function of the
condition rather than a difference of two nearly equal normalised inputs.

Joint trajectories (per sample)
  * Via-points q_0..q_K (K = `num_segments`, at least enough to cover the window).
    Mixture over samples: with probability `p_workspace` all via-points are drawn from a
    normal around the robot's home pose (the Panda: robosuite's `INIT_QPOS` = [0, pi/16, 0,
    -pi/2-pi/3, 0, pi-0.2, pi/4]) with per-joint std `workspace_std` (() = the robot's; the
    Panda's is wide: 0.4-0.8 rad), truncated to the joint limits (minus `limit_margin`, rad or
    m); otherwise uniformly within the limits (the v1 FK dataset's choice). The first
    component covers the configurations table-top manipulation visits (gripper pointing down
    in front of the robot), the second keeps the whole joint space covered. Self-collisions
    are not checked: a window may pass through configurations where links intersect.
  * Segments are rest-to-rest minimum-jerk: q(t) = q_k + (q_{k+1} - q_k) s(tau),
    s = 10 tau^3 - 15 tau^4 + 6 tau^5. Each segment's duration is the largest of
    `min_segment_s`, the time that keeps the peak joint velocity (1.875 |dq| / T) under
    `speed * vel_margin * velocity_limits` (Franka: 2.175 rad/s joints 1-4, 2.61 rad/s joints
    5-7) and the time that keeps the peak acceleration (5.774 |dq| / T^2) under
    `vel_margin * acceleration_limits`; `speed` ~ U(`speed_range`) per segment gives slow and
    fast motions. Min-jerk segments are monotone, so positions stay between via-points, hence
    inside the joint limits.
  * The window starts uniformly in [0, total_duration - (H-1)/fps].
  * Gripper commands (one per end-effector site, none for `gripper.joints='none'`): the
    range's two values (robosuite: -1 open, +1 close); the first frame is the closed value with
    probability `p_close`, then the command flips at each frame with probability
    `gripper_switch_prob`, independently per gripper.

Delta targets (`target='delta'`, pose robots only; docs/libero.md "A generated delta-action
stage 1"): the target of frame t is the motion from frame t to t+1 (H+1 frames are generated,
the condition is the first H) in the form of a delta end-effector controller's action (LIBERO's
OSC_POSE, model form): [clip(dpos / delta_pos_scale, -1, 1) (3), rot6d(exp(clip(w /
delta_rot_scale, -1, 1))) (6)(, gripper)] per site, with dpos the base-frame displacement and w
the rotation vector of R_{t+1} R_t^T (base frame, the controller's left-multiplied goal
rotation). The defaults are the scales measured on LIBERO's scripted demos, where one unit of
delta action moved the end effector ~11 mm and turned it ~64 mrad per 20 Hz step (least-squares
fit, docs/results/decoupled_gap.md); a per-step displacement beyond them saturates at 1, as the
controller's input range does.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from decoupled_jax.data import rotation
from decoupled_jax.data.normalizer import ABCDEFGH_POS_MAX, ABCDEFGH_POS_MIN
from decoupled_jax.kinematics import SIGNALS, panda
from decoupled_jax.kinematics import robot as robot_lib

# The shared position-normalisation box (docs/method.md §6), as the generator's default.
DEFAULT_WORKSPACE_BOX = (tuple(float(v) for v in ABCDEFGH_POS_MIN),
                         tuple(float(v) for v in ABCDEFGH_POS_MAX))
TARGETS = ("absolute", "delta")


@dataclasses.dataclass(frozen=True)
class FKWindowConfig:
  horizon: int = 16
  fps: float = 20.0
  signal: str = "jp"                         # 'jp' | 'eepose' | 'none'
  # The built-in Panda's end effector when no robot is given: 'grip_site' (action frame) |
  # 'hand' (eef_quat). With a robot (config.robot), its `ee_sites` decide.
  site: str = "grip_site"
  fk_backend: str = "tree"                   # 'tree' (plain JAX over the MJCF tree) | 'mjx'
  p_workspace: float = 0.7
  workspace_std: tuple = ()                  # per joint or one value; () = the robot's
  limit_margin: float = 0.01                 # rad (m for slide joints) kept from each limit
  num_segments: int = 0                      # 0: ceil(window / min_segment_s) + 1
  min_segment_s: float = 0.4
  speed_range: tuple = (0.15, 1.0)           # fraction of the velocity limits per segment
  vel_margin: float = 0.9                    # applied to velocity and acceleration limits
  gripper_switch_prob: float = 0.05
  p_close: float = 0.5
  # Keep the end effector in the manipulation workspace: every via-point is chosen among
  # `via_candidates` joint draws as the first whose end-effector position(s) lie in
  # `workspace_box` (min xyz, max xyz; base frame) shrunk by `box_margin`, else the one
  # closest to it. Empty box = no constraint. Default: the fixed position-normalisation box
  # shared by stage 1 and stage 2 (data/normalizer.py ABCDEFGH stats), so normalised targets
  # lie in [-1, 1] like the stage-2 actions.
  workspace_box: tuple = DEFAULT_WORKSPACE_BOX
  box_margin: float = 0.02
  via_candidates: int = 16
  # 'absolute': the pose (or joint) vector of each frame; 'delta': a delta controller's action
  # per step (module docstring), metres and radians per unit of action.
  target: str = "absolute"
  delta_pos_scale: float = 0.011
  delta_rot_scale: float = 0.064

  def __post_init__(self):
    if self.signal not in SIGNALS:
      raise ValueError(f"signal must be one of {SIGNALS}, got {self.signal!r}")
    if self.target not in TARGETS:
      raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
    if not (self.delta_pos_scale > 0 and self.delta_rot_scale > 0):
      raise ValueError(f"delta_pos_scale and delta_rot_scale must be > 0, got "
                       f"{self.delta_pos_scale}, {self.delta_rot_scale}")
    if self.site not in panda.SITE_NAMES:
      raise ValueError(f"site must be one of {panda.SITE_NAMES}, got {self.site!r}")
    if self.fk_backend not in ("tree", "mjx"):
      raise ValueError(f"fk_backend must be 'tree' or 'mjx', got {self.fk_backend!r}")
    if self.horizon < 1:
      raise ValueError("horizon must be >= 1")
    object.__setattr__(self, "workspace_std", tuple(float(v) for v in self.workspace_std))
    if any(not v > 0 for v in self.workspace_std):
      raise ValueError(f"workspace_std must be > 0, got {self.workspace_std}")
    object.__setattr__(self, "speed_range", tuple(float(v) for v in self.speed_range))
    object.__setattr__(self, "workspace_box",
                       tuple(tuple(float(x) for x in row) for row in self.workspace_box))
    if self.workspace_box and (len(self.workspace_box) != 2 or
                               any(len(r) != 3 for r in self.workspace_box)):
      raise ValueError("workspace_box must be ((xmin, ymin, zmin), (xmax, ymax, zmax)) or ()")
    if self.via_candidates < 1:
      raise ValueError("via_candidates must be >= 1")

  @property
  def segments(self) -> int:
    if self.num_segments:
      return self.num_segments
    window = (self.horizon - 1) / self.fps
    return int(math.ceil(window / self.min_segment_s)) + 1

  @property
  def cond_dim(self) -> int:
    """The built-in Panda's condition width (any robot: `FKWindowSampler.cond_dim`)."""
    return {"eepose": 10, "jv": 15}.get(self.signal, 8)

  @classmethod
  def from_any(cls, config) -> "FKWindowConfig":
    if config is None:
      return cls()
    if isinstance(config, cls):
      return config
    d = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
      raise ValueError(f"unknown FKWindowConfig keys: {sorted(unknown)}")
    return cls(**d)


def _limits(info: robot_lib.RobotInfo, cfg: FKWindowConfig):
  lo = jnp.asarray(info.joint_lower + cfg.limit_margin, jnp.float32)
  hi = jnp.asarray(info.joint_upper - cfg.limit_margin, jnp.float32)
  return lo, hi


def workspace_std(info: robot_lib.RobotInfo, cfg: FKWindowConfig) -> np.ndarray:
  """The near-home draws' per-joint std: `cfg.workspace_std` (one value or one per joint),
  else the robot's."""
  if not cfg.workspace_std:
    return np.asarray(info.workspace_std, np.float64)
  std = np.asarray(cfg.workspace_std, np.float64)
  if std.size == 1:
    return np.full(info.num_joints, float(std[0]))
  if std.size != info.num_joints:
    raise ValueError(f"workspace_std has {std.size} values for the robot's {info.num_joints} "
                     f"joints")
  return std


def _truncated_normal(u, lo, hi):
  """Inverse-CDF standard normal truncated to [lo, hi] from uniforms u in [0, 1)."""
  cdf = lambda x: 0.5 * jax.scipy.special.erfc(-x / np.sqrt(2.0))
  p = cdf(lo) + u * (cdf(hi) - cdf(lo))
  return jnp.clip(jax.scipy.special.ndtri(jnp.clip(p, 1e-7, 1 - 1e-7)), lo, hi)


def _sample_via_points(u_norm, u_unif, u_comp, cfg: FKWindowConfig, info: robot_lib.RobotInfo):
  """Via-points (B, K+1, nj) from uniforms u_norm, u_unif (B, K+1, nj) and u_comp (B,)."""
  lo, hi = _limits(info, cfg)
  mu = jnp.asarray(np.clip(info.init_qpos, info.joint_lower + cfg.limit_margin,
                           info.joint_upper - cfg.limit_margin), jnp.float32)
  std = jnp.asarray(workspace_std(info, cfg), jnp.float32)
  near_home = mu + std * _truncated_normal(u_norm, (lo - mu) / std, (hi - mu) / std)
  uniform = lo + (hi - lo) * u_unif
  use_ws = (u_comp < cfg.p_workspace)[:, None, None]
  return jnp.clip(jnp.where(use_ws, near_home, uniform), lo, hi)


def _min_jerk(tau):
  return tau ** 3 * (10.0 + tau * (-15.0 + 6.0 * tau))


def _choose_in_box(candidates, params, cfg: FKWindowConfig, info: robot_lib.RobotInfo):
  """candidates (B, K+1, C, nj) -> (B, K+1, nj): the first candidate whose end effectors are
  all inside the (shrunk) workspace box, else the one nearest to the box."""
  pos, _ = fk_sites(params, candidates, cfg, info)                       # [(B, K+1, C, 3)]
  lo = jnp.asarray(cfg.workspace_box[0], jnp.float32) + cfg.box_margin
  hi = jnp.asarray(cfg.workspace_box[1], jnp.float32) - cfg.box_margin
  outs = [jnp.sum(jnp.maximum(lo - p, 0.0) + jnp.maximum(p - hi, 0.0), axis=-1) for p in pos]
  outside = outs[0]
  for o in outs[1:]:
    outside = outside + o
  # argmin picks the first exact zero (inside), otherwise the smallest violation.
  best = jnp.argmin(outside, axis=-1)                                     # (B, K+1)
  return jnp.take_along_axis(candidates, best[..., None, None], axis=2)[:, :, 0]


def _gripper_commands(u_g0, u_flip, cfg: FKWindowConfig, info: robot_lib.RobotInfo, b: int,
                      h: int) -> list:
  """One (B, H) command per gripper from uniforms u_g0 (B, G) and u_flip (B, H*G)."""
  g = info.num_grippers
  if g == 0:
    return []
  if g == 1:
    g0 = jnp.where(u_g0 < cfg.p_close, 1.0, -1.0)
    flips = (u_flip < cfg.gripper_switch_prob).at[:, 0].set(False)
    parity = jnp.cumsum(flips.astype(jnp.int32), axis=1) % 2
    out = [g0 * (1.0 - 2.0 * parity.astype(jnp.float32))]
  else:
    g0 = jnp.where(u_g0 < cfg.p_close, 1.0, -1.0)                          # (B, G)
    flips = (u_flip.reshape(b, g, h) < cfg.gripper_switch_prob).at[:, :, 0].set(False)
    parity = jnp.cumsum(flips.astype(jnp.int32), axis=2) % 2
    cmd = g0[:, :, None] * (1.0 - 2.0 * parity.astype(jnp.float32))       # (B, G, H)
    out = [cmd[:, i] for i in range(g)]
  if not info.default_gripper_range:   # -1 -> open value, +1 -> close value
    lo, hi = info.gripper_range
    out = [lo + (hi - lo) * 0.5 * (c + 1.0) for c in out]
  return out


def _sample_joint_windows(rng, cfg: FKWindowConfig, info: robot_lib.RobotInfo, batch_size: int,
                          params=None):
  """Joint windows (B, H, nj) and the list of gripper commands [(B, H)] * G."""
  # All randomness comes from ONE 2-D uniform draw: XLA:CPU compiles threefry for a 2-D shape
  # in well under a second but takes seconds per call for several (or 3-D) draws.
  k, h, nj, g = cfg.segments, cfg.horizon, info.num_joints, info.num_grippers
  boxed = bool(cfg.workspace_box) and params is not None
  c = cfg.via_candidates if boxed else 1
  sizes = [(k + 1) * c * nj, (k + 1) * c * nj, 1, k, 1, g, h * g]
  u = jax.random.uniform(rng, (batch_size, sum(sizes)), jnp.float32)
  u_norm, u_unif, u_comp, u_speed, u_start, u_g0, u_flip = jnp.split(
      u, np.cumsum(sizes)[:-1], axis=1)
  via = _sample_via_points(u_norm.reshape(batch_size, (k + 1) * c, nj),
                           u_unif.reshape(batch_size, (k + 1) * c, nj), u_comp[:, 0], cfg, info)
  if boxed:
    via = _choose_in_box(via.reshape(batch_size, k + 1, c, nj), params, cfg, info)
  dq = jnp.abs(via[:, 1:] - via[:, :-1])                                   # (B, K, nj)
  vmax = jnp.asarray(info.velocity_limits * cfg.vel_margin, jnp.float32)
  amax = jnp.asarray(info.acceleration_limits * cfg.vel_margin, jnp.float32)
  s_lo, s_hi = cfg.speed_range
  speed = (s_lo + (s_hi - s_lo) * u_speed)[..., None]                     # (B, K, 1)
  t_vel = 1.875 * dq / (speed * vmax)
  t_acc = jnp.sqrt(5.7735027 * dq / amax)
  durations = jnp.maximum(cfg.min_segment_s, jnp.max(jnp.maximum(t_vel, t_acc), axis=-1))  # (B, K)
  ends = jnp.cumsum(durations, axis=-1)
  starts = ends - durations
  window = (cfg.horizon - 1) / cfg.fps
  t0 = u_start * jnp.maximum(ends[:, -1:] - window, 0.0)
  t = t0 + jnp.arange(cfg.horizon, dtype=jnp.float32) / cfg.fps            # (B, H)
  seg = jnp.sum(t[:, :, None] >= ends[:, None, :], axis=-1)               # searchsorted, right
  seg = jnp.clip(seg, 0, k - 1)
  take = lambda a: jnp.take_along_axis(a, seg, axis=1)
  tau = jnp.clip((t - take(starts)) / take(durations), 0.0, 1.0)
  q_a = jnp.take_along_axis(via, seg[..., None], axis=1)
  q_b = jnp.take_along_axis(via, seg[..., None] + 1, axis=1)
  qpos = q_a + (q_b - q_a) * _min_jerk(tau)[..., None]
  return qpos, _gripper_commands(u_g0, u_flip, cfg, info, batch_size, h)


def _stack_grippers(grippers: list, qpos):
  """The public gripper array: (B, H) for one gripper (the Panda's), else (B, H, G)."""
  if len(grippers) == 1:
    return grippers[0]
  if not grippers:
    return jnp.zeros(qpos.shape[:-1] + (0,), jnp.float32)
  return jnp.stack(grippers, axis=-1)


def fk_sites(params, qpos, cfg: FKWindowConfig, info: robot_lib.RobotInfo):
  """(..., nj) joints -> lists over the ee sites of pos (..., 3) and rotation (..., 3, 3),
  base frame, with the configured backend."""
  nj = info.num_joints
  flat = qpos.reshape(-1, nj)   # 2-D batches compile faster on XLA:CPU than 3-D ones
  if cfg.fk_backend == "mjx":
    pos, mat = robot_lib.fk_mjx_site_list(params, flat, info.layout, info.qpos_adr)
  else:
    pos, mat = robot_lib.fk_tree_site_list(params, flat, info.layout)
  lead = qpos.shape[:-1]
  return [p.reshape(lead + (3,)) for p in pos], [m.reshape(lead + (3, 3)) for m in mat]


def pose_vector(pos: list, mat: list, grippers: list, info: robot_lib.RobotInfo):
  """[pos, rot6d(, gripper)] per site, concatenated (float32)."""
  parts = []
  for s, (p, m) in enumerate(zip(pos, mat)):
    parts += [p, m[..., :2, :].reshape(m.shape[:-2] + (6,))]
    if grippers:
      parts.append(grippers[s][..., None])
  return jnp.concatenate(parts, axis=-1).astype(jnp.float32)


def joint_vector(qpos, grippers: list):
  """[joints, grippers]."""
  return jnp.concatenate([qpos] + [g[..., None] for g in grippers], axis=-1)


def delta_vector(pos: list, mat: list, grippers: list, cfg: FKWindowConfig):
  """The delta-action target (module docstring) of frames 0..H-1 from H+1 frames: per site
  [clipped dpos / scale, rot6d(exp(clipped w / scale))(, gripper of frame t)] (float32)."""
  parts = []
  for s, (p, m) in enumerate(zip(pos, mat)):
    dpos = jnp.clip((p[..., 1:, :] - p[..., :-1, :]) / cfg.delta_pos_scale, -1.0, 1.0)
    rel = m[..., 1:, :, :] @ jnp.swapaxes(m[..., :-1, :, :], -1, -2)
    w = jnp.clip(rotation.matrix_to_axis_angle(rel) / cfg.delta_rot_scale, -1.0, 1.0)
    parts += [dpos, rotation.axis_angle_to_rot6d(w)]
    if grippers:
      parts.append(grippers[s][..., :-1, None])
  return jnp.concatenate(parts, axis=-1).astype(jnp.float32)


def delta_to_physical(x, cfg: FKWindowConfig, info: robot_lib.RobotInfo) -> np.ndarray:
  """Delta targets (..., pose_dim) -> the same motion in metres and radians per step:
  positions x `delta_pos_scale`, each rotation's angle x `delta_rot_scale` (host, numpy)."""
  x = np.array(x, np.float64)
  for pos_dims, rot_dims in zip(info.pose_position_dims(), info.pose_rot6d_dims()):
    x[..., pos_dims] *= cfg.delta_pos_scale
    w = rotation.rot6d_to_axis_angle(x[..., rot_dims]) * cfg.delta_rot_scale
    x[..., rot_dims] = rotation.axis_angle_to_rot6d(w)
  return x.astype(np.float32)


def sample_fk_windows(rng, params, cfg: FKWindowConfig, info: robot_lib.RobotInfo,
                      batch_size: int, return_joints: bool = False, return_poses: bool = False):
  """The pure sampler: `cond (B, H, Dc)`, `target (B, H, Da)` (+ qpos, gripper if asked;
  + the pose vector (B, H, pose_dim) if `return_poses`).

  params: `robot.kinematics_tree(model)` ('tree') or `mjx.put_model(model)` ('mjx'); pass it
  as a jit argument. cfg, info, batch_size are static.
  """
  delta = cfg.target == "delta"
  if delta and info.action_space != "ee_pose":
    raise ValueError("target='delta' needs an end-effector pose robot (action_space 'ee_pose')")
  ahead = delta or cfg.signal == "jv"   # one frame more: the step to the next frame
  gen = dataclasses.replace(cfg, horizon=cfg.horizon + 1) if ahead else cfg
  qpos, grippers = _sample_joint_windows(rng, gen, info, batch_size, params)
  pos, mat = fk_sites(params, qpos, cfg, info)
  moves = delta_vector(pos, mat, grippers, cfg) if delta else None   # needs all H+1 frames
  if ahead:   # the step to the next frame; everything else of the first H frames
    h = cfg.horizon
    q_step = qpos[:, 1:] - qpos[:, :-1]
    qpos, grippers = qpos[:, :h], [g[:, :h] for g in grippers]
    pos, mat = [p[:, :h] for p in pos], [m[:, :h] for m in mat]
  poses = pose_vector(pos, mat, grippers, info)
  if delta:
    target = moves
  elif info.action_space == "ee_pose":
    target = poses
  else:
    target = joint_vector(qpos, grippers).astype(jnp.float32)
  if cfg.signal == "jp":
    cond = joint_vector(qpos, grippers)
  elif cfg.signal == "eepose":
    cond = poses
  elif cfg.signal == "jv":
    cond = jnp.concatenate([qpos, q_step] + [g[..., None] for g in grippers], axis=-1)
  else:
    cond = jnp.zeros(qpos.shape[:-1] + (info.joint_dim,), jnp.float32)
  out = (cond, target)
  if return_joints:
    out += (qpos, _stack_grippers(grippers, qpos))
  if return_poses:
    out += (poses,)
  return out


@dataclasses.dataclass
class FKWindowSampler:
  """`sampler(rng, batch_size) -> (cond, target)`, jitted, model arrays passed as arguments.

  Inside your own jitted step call `sampler.sample_pure(rng, params, batch_size)` with
  `params = sampler.params` passed into the step (or closed over: for the 'tree' backend they
  are a few hundred floats).
  """
  config: FKWindowConfig
  info: robot_lib.RobotInfo
  params: Any
  mj_model: Any

  def __post_init__(self):
    # One compiled program per batch size: it always returns (cond, target, qpos, gripper,
    # poses).
    self._jitted = jax.jit(lambda rng, params, b: self.sample_pure(rng, params, b, True, True),
                           static_argnums=2)

  @property
  def cond_dim(self) -> int:
    return self.info.cond_dim(self.config.signal)

  @property
  def target_dim(self) -> int:
    return self.info.target_dim

  def sample_pure(self, rng, params, batch_size: int, return_joints: bool = False,
                  return_poses: bool = False):
    return sample_fk_windows(rng, params, self.config, self.info, batch_size, return_joints,
                             return_poses)

  def __call__(self, rng, batch_size: int, return_joints: bool = False,
               return_poses: bool = False):
    out = self._jitted(rng, self.params, batch_size)
    return out[:2] + (out[2:4] if return_joints else ()) + (out[4:] if return_poses else ())


def make_fk_window_sampler(config=None, robot=None) -> FKWindowSampler:
  """Builds the robot's kinematics model and a jitted window sampler. `config`:
  FKWindowConfig, dict or ConfigDict with FKWindowConfig's fields (missing ones take the
  defaults); `robot`: `robot.Robot`, `RobotSpec`, the `config.robot` section, or None = the
  built-in Panda with `config.site` as its end effector."""
  cfg = FKWindowConfig.from_any(config)
  if robot is None:
    robot = robot_lib.RobotSpec(ee_sites=(cfg.site,))
  r = robot if isinstance(robot, robot_lib.Robot) else robot_lib.load_robot(robot)
  workspace_std(r.info, cfg)   # checks its length
  if cfg.fk_backend == "mjx":
    params = robot_lib.put_mjx_model(r.model)
  else:
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), robot_lib.kinematics_tree(r.model))
  return FKWindowSampler(cfg, r.info, params, r.model)


def reachable_box(poses, info: robot_lib.RobotInfo, margin: float = 0.05) -> np.ndarray:
  """Per-site position box (S, 2, 3) = [min, max] of the sites' positions in `poses` (pose
  vectors (..., pose_dim) of generated windows, `sampler(..., return_poses=True)`), widened
  by `margin` x its size on each side (robot.workspace='auto')."""
  poses = np.asarray(poses)
  out = []
  for dims in info.pose_position_dims():
    p = poses[..., dims].reshape(-1, 3).astype(np.float64)
    lo, hi = p.min(0), p.max(0)
    pad = margin * np.maximum(hi - lo, 1e-3)
    out.append(np.stack([lo - pad, hi + pad]))
  return np.stack(out).astype(np.float32)
